"""The evaluator's Prometheus metrics (the runtime adds consumed, published, dead letters, lag), and
their export after each main evaluation."""

from prometheus_client import Counter, Gauge

ACCURACY = Gauge("distillery_evaluator_accuracy", "Held-out accuracy", ["unit", "subject"])
GAP = Gauge("distillery_evaluator_teacher_gap", "Best teacher accuracy minus trained student accuracy", ["unit"])
ROI = Gauge("distillery_evaluator_roi", "Net saving over the horizon divided by offline cost")
NET = Gauge("distillery_evaluator_net_saving_usd", "Net saving over the horizon in USD")
BREAK_EVEN = Gauge("distillery_evaluator_break_even_requests", "Requests until the offline cost is paid back (-1: never)")
LEDGER = Gauge("distillery_evaluator_ledger", "Every figure of the latest ROI ledger", ["item"])
METRIC = Gauge("distillery_evaluator_metric", "Unit metrics of the latest evaluation", ["unit", "subject", "metric"])
AGREEMENT = Gauge("distillery_evaluator_teacher_agreement", "Share of held-out tasks where the student answers like the best teacher", ["unit"])
STOP = Gauge("distillery_evaluator_stop_signal", "1 while a stop signal fires; the reason label says why", ["signal", "reason"])

PROMOTIONS = Counter("distillery_evaluator_promotions", "Students promoted for a unit (shadow traffic starts)", ["student", "unit"])
DEMOTIONS = Counter("distillery_evaluator_demotions", "Promoted students demoted for a unit (live quality too low)", ["student", "unit"])
SHADOW = Counter("distillery_evaluator_shadow_answers", "Judged shadow answers of promoted students, by pool", ["unit", "pool"])
LIVE = Gauge("distillery_evaluator_live", "A promoted student's live window: quality (judge acceptance) of student and "
             "teachers on the same tasks, agreement, answers, failed answers", ["student", "unit", "item"])


def export_live(student: str, unit: str, live) -> None:
    if live is None:
        return
    for item in ("student_quality", "teacher_quality", "agreement", "n", "errors"):
        LIVE.labels(student, unit, item).set(getattr(live, item))


def export(scores, ledger, metrics, agree, signals) -> None:
    best_teacher: dict[str, float] = {}
    for s in scores:
        ACCURACY.labels(s.unit, s.subject).set(s.accuracy)
        if s.subject.startswith("teacher:"):
            best_teacher[s.unit] = max(best_teacher.get(s.unit, 0.0), s.accuracy)
    for s in scores:
        if s.subject == "student:after" and s.unit in best_teacher:
            GAP.labels(s.unit).set(best_teacher[s.unit] - s.accuracy)
    ROI.set(ledger["roi"])
    NET.set(ledger["net_saving_usd"])
    BREAK_EVEN.set(ledger["break_even_requests"])
    for item, value in ledger.items():
        LEDGER.labels(item).set(value)
    for row in metrics:
        METRIC.labels(row["unit"], row["subject"], row["metric"]).set(row["value"])
    for unit, value in agree.items():
        AGREEMENT.labels(unit).set(value)
    STOP.clear()  # a signal's reason changes between rounds: no stale series
    for s in signals:
        STOP.labels(s.name, s.reason).set(float(s.fired))
