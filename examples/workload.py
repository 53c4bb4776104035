"""Write the example workload as JSONL (a thin wrapper of ``python -m distillery_cli.workload``)."""

from distillery_cli.workload import main

if __name__ == "__main__":
    raise SystemExit(main())
