"""Helpers shared by the test suite and the benchmarks: the real stack (supervisor + nginx),
throwaway Postgres databases, private redis-server instances, test schemas and polling."""
