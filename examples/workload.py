"""Write the example workload as JSONL (a thin wrapper of ``python -m distillery.workload``)."""

from distillery.workload import main

if __name__ == "__main__":
    raise SystemExit(main())
