"""The procedural synthetic CT cohort: anatomy, clinical plan, rendering and the cached scan source."""
