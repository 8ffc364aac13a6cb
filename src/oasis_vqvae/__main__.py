"""``python -m oasis_vqvae`` is the ``oasis-vqvae`` command."""

from oasis_vqvae.cli import main

raise SystemExit(main())
