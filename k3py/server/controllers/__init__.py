"""The controllers: one informer/work-queue base (base.py) shared by every controller module,
started in order by manager.py; see docs/design/controllers.md."""
