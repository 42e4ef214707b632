"""Launching a job's trainings on its ranks: in the job process, as elastic workers, or as cluster tasks."""
