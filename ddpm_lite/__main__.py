"""`python -m ddpm_lite ...` is the same as the `ddpm-lite` command (and works under torchrun)."""
from .cli import main

raise SystemExit(main())
