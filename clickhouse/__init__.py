"""The ClickHouse data model (migrations, views, rollups, prices) and the one query layer over it."""
