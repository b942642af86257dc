"""The MongoDB store (PyMongo AsyncMongoClient): `store` holds the queries, `reports` the aggregation pipelines."""

from storage.mongo.store import MongoStore

__all__ = ["MongoStore"]
