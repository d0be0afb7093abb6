"""Use cases the faces share: settings -> engine (runtime), config resolution, pull."""
