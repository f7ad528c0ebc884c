"""`python -m tuner.engine JOB_DIR`: run one training job (also under `accelerate launch`)."""
import sys

from tuner.engine.runner import run_job_dir

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m tuner.engine JOB_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_job_dir(sys.argv[1]))
