"""The gateway's Redis Lua scripts, loaded with ``riverbed.scripts.LuaScript.load``."""
