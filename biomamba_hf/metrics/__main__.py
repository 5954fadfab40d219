"""``python -m biomamba_hf.metrics``: the same as the ``biomamba-bioasq-eval`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
