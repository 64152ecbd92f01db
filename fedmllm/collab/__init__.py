"""Edge collaboration between a large server MLLM and small client MLLMs (no Flower)."""
