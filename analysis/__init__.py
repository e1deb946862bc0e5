"""Analysis: reads result rows (the schema, hardware profiles, prices) and turns them into
reports, the deployment planner, sanity checks and tables. It never imports the runner,
scenarios, executors or the load generator.
"""
