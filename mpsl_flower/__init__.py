"""mpsl-flower: parallel split learning (MPSL) of multimodal transformers on Flower."""
