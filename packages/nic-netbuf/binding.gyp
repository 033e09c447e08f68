{
  "targets": [
    {
      "target_name": "remus_rtnl",
      "sources": ["native/rtnl.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
