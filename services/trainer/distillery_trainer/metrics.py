"""The trainer's Prometheus metrics (the runtime adds consumed, published, dead letters, lag)."""

from prometheus_client import Counter, Gauge

STEP = Gauge("distillery_trainer_step", "Current optimisation step of the running job", ["student"])
TOTAL = Gauge("distillery_trainer_total_steps", "Steps of the running job", ["student"])
LOSS = Gauge("distillery_trainer_loss", "Latest training loss", ["student"])
RUNS = Counter("distillery_trainer_runs_total", "Finished training runs", ["student"])
SAMPLES = Gauge("distillery_trainer_dataset_samples", "Samples in the last snapshot of a student", ["student"])
THROUGHPUT = Gauge("distillery_trainer_tokens_per_second", "Training tokens per second of the last run", ["student"])
KD_EXAMPLES = Gauge("distillery_trainer_kd_examples", "Examples of the last run with a logit-distillation signal", ["student"])
UNREADABLE = Counter("distillery_trainer_unreadable_records_total",
                     "Records of a snapshot that are not events of their topic (skipped, counted here)", ["topic"])
ROUND = Gauge("distillery_trainer_round", "The latest automatic round requested per student (spec rounds)", ["student"])
STOPPED = Gauge("distillery_trainer_unit_stopped", "1 while a stop signal keeps a unit out of the student's rounds",
                ["student", "unit"])
