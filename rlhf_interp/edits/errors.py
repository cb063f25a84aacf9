"""The error every edit raises for input that does not fit the model."""


class EditError(ValueError):
    """An edit was given something the model cannot take; the message names the valid choices."""
