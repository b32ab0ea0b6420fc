"""Orchestrator service: owns the task lifecycle (validate, detect sections, persist, dispatch
section jobs to the workers in parallel, aggregate, finish) and resumes unfinished tasks."""
