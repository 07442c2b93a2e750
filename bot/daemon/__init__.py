"""The long-lived daemon: calendar-driven jobs around the engine, restart-safe."""
