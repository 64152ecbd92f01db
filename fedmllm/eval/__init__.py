"""fedmllm."""
