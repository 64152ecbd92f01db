"""fedmllm: centralized and federated tuning of multimodal LLMs — specialization, forgetting, drift."""

__version__ = "0.1.0"
