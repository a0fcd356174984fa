"""Methods: one module per published system, each a subclass of EmotionRecognizer."""
