"""The allocation API (`bot serve`): robo profiles, order plans, suitability and client
accounts over HTTP, answered by the engine's own model, planner and trade log."""
