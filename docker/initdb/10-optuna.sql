-- The Optuna study and MLflow's users and permissions live in their own databases on the same server.
CREATE DATABASE optuna;
CREATE DATABASE mlflow_auth;
