defmodule ZarrBridge.InstallTest do
  # Not async: one test changes pip's environment variables.
  use ExUnit.Case, async: false

  import ZarrBridge.Test.TmpDir

  import ExUnit.CaptureIO

  alias Mix.Tasks.Compile.ZarrBridgePython
  alias Mix.Tasks.ZarrBridge.Install

  @repo Path.expand("../../..", __DIR__)

  describe "the Python source in priv/python" do
    test "is the repository's pybridge, pyproject.toml and constraints.txt, kept in sync" do
      target = Path.join(tmp_dir("sync"), "python")
      assert {:ok, []} = ZarrBridgePython.sync(@repo, target)
      assert {:noop, []} = ZarrBridgePython.sync(@repo, target)

      for rel <- ["pybridge/__init__.py", "pybridge/zarr/read.py", "pyproject.toml"] do
        assert File.read!(Path.join(target, rel)) == File.read!(Path.join(@repo, rel))
      end

      File.write!(Path.join(target, "pybridge/stale.py"), "")
      assert {:ok, []} = ZarrBridgePython.sync(@repo, target)
      refute File.exists?(Path.join(target, "pybridge/stale.py"))
    end

    test "the client, the sidecar and its distribution have one version" do
      vsn = Mix.Project.config()[:version]
      assert File.read!(Path.join(@repo, "pybridge/__init__.py")) =~ ~s(__version__ = "#{vsn}")
      pyproject = File.read!(Path.join(@repo, "pyproject.toml"))
      assert pyproject =~ ~s(name = "zarr-bridge-sidecar")
      assert pyproject =~ ~s(version = "#{vsn}")
      assert "priv/python" in Mix.Project.config()[:package][:files]
    end
  end

  describe "mix zarr_bridge.install fails with a fix-it" do
    test "when the given Python does not exist" do
      dir = tmp_dir("no-python")

      error =
        assert_raise Mix.Error, fn ->
          capture_io(fn -> Install.run(["--python", "/nonexistent/python3", "--dir", dir]) end)
        end

      assert error.message =~ "--python /nonexistent/python3"
    end

    test "when the Python is older than 3.11" do
      # An interpreter that reports 3.10 (none that old is installed here).
      dir = tmp_dir("old-python")
      old = Path.join(dir, "python3.10")
      File.write!(old, "#!/bin/sh\necho /usr/bin/python3.10; echo 3.10\n")
      File.chmod!(old, 0o755)

      error =
        assert_raise Mix.Error, fn ->
          capture_io(fn -> Install.run(["--python", old, "--dir", Path.join(dir, "env")]) end)
        end

      assert error.message =~ "is Python 3.10; the sidecar needs Python 3.11 or newer"
      refute File.exists?(Path.join(dir, "env"))
    end

    @tag timeout: 300_000
    test "when a package cannot be fetched, and leaves no half-made environment" do
      dir = Path.join(tmp_dir("no-index"), "env")

      pip = [
        {"PIP_CONFIG_FILE", "/dev/null"},
        {"PIP_INDEX_URL", "http://127.0.0.1:9/simple"},
        {"PIP_EXTRA_INDEX_URL", ""},
        {"PIP_FIND_LINKS", ""},
        {"PIP_NO_CACHE_DIR", "1"},
        {"PIP_RETRIES", "0"},
        {"PIP_TIMEOUT", "2"}
      ]

      saved = for {k, _} <- pip, do: {k, System.get_env(k)}

      try do
        Enum.each(pip, fn {k, v} -> System.put_env(k, v) end)

        error =
          assert_raise Mix.Error, fn ->
            capture_io(fn -> Install.run(["--dir", dir]) end)
          end

        assert error.message =~ "pip could not install zarr-bridge-sidecar"
        assert error.message =~ "Fix: check that this machine reaches the package index"
        refute File.exists?(dir)
      after
        Enum.each(saved, fn
          {k, nil} -> System.delete_env(k)
          {k, v} -> System.put_env(k, v)
        end)
      end
    end
  end
end
