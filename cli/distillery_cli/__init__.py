"""The operator CLI (`distillery ...`), the local stack and its embedded broker, and the workload generator."""
