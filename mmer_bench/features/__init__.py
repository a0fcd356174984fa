"""Feature extractors and the Parquet feature store they write to."""
