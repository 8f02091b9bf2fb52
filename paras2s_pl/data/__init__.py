"""Shard schema, writing, reading and the mini-world seed data."""
