"""What every room shares, below the engines: config fields, errors, measurement types, the
task -> tensor contract, energy meters, host facts, the environment, ports, and every outside
process we start (`core.processes`). It imports no other room of the project.
"""
