"""Access reports: build (from the store's aggregates), render (table/CSV/JSON), html, chat."""
