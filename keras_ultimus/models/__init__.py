"""The Ultimus model: its attention layer and the model builder."""
