"""The embedded collector: OTLP/HTTP and OTLP/gRPC receivers writing exporter-identical rows into ClickHouse."""
