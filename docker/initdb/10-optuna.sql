-- The Optuna study lives in its own database on the same PostgreSQL server.
CREATE DATABASE optuna;
