"""Live status: the event hub, worker presence and queue sampling (what streams and the dashboard show)."""
