"""Reading traces from the field (Perfetto protobuf, ftrace/atrace text), replaying their
oom_score_adj churn, and the synthetic phone traces the tests and benchmarks use."""
