"""The runtime's Redis Lua scripts, one ``<name>.lua`` file each, shipped as package data.

Load one with ``riverbed.scripts.LuaScript.load("riverbed.lua", "<name>")``. Each file
starts with a comment saying what it does and what its KEYS and ARGV are; every key a
script touches is passed in KEYS, so each one is safe on Redis Cluster.
"""
