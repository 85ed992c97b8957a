"""The village service-point terminal (/terminal): a farmer's own farm and data, on a small touch screen."""
