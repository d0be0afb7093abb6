"""The Textual face of starchat: `starchat chat`. Build the app with ``make_app``."""
