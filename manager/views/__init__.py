"""What operators and auditors are shown, built once for both faces: the CLI (`manager.cli`) and the
dashboard (`manager.web`) import their rows and their list of operator intents from here, and never
each other."""
