defmodule ZarrBridge.ShmFaultsTest do
  # A sidecar whose /dev/shm is small, full, read-only, missing or simply
  # not this client's (its own mount namespace, through a wrapper given as
  # the :python option), and one running as another user: reads and writes
  # of 16 MiB must work by the pipe, with the data checked by zarr-python,
  # the sidecar keeps its OS pid, and hello says whether handoff is usable.
  # Needs root (unshare --mount, mount, setpriv). Not async: two cores.
  use ZarrBridge.Test.SidecarCase, async: false

  alias ZarrBridge.{Array, NDArray}
  alias ZarrBridge.Test.Python

  @moduletag timeout: 600_000

  # Shell that prepares the namespace's /dev/shm, per fault.
  @setups %{
    small: "mount -t tmpfs -o size=2m,mode=1777 tmpfs /dev/shm",
    full:
      "mount -t tmpfs -o size=2m,mode=1777 tmpfs /dev/shm && " <>
        "(head -c 4194304 /dev/zero > /dev/shm/filler 2>/dev/null; true)",
    ro: "mount -t tmpfs -o ro,size=2m tmpfs /dev/shm",
    # /dev is a fresh tmpfs with a few device nodes (bound from the hidden
    # /dev, which the working directory keeps reachable; -c: mount must not
    # resolve ./null to the new, empty /dev/null)
    missing:
      ~s(W=$PWD && cd /dev && mount -t tmpfs -o size=1m tmpfs /dev && ) <>
        ~s(for n in null zero full random urandom; do ) <>
        ~s(touch /dev/$n && mount -c --bind ./$n /dev/$n || exit 1; done && ) <>
        ~s(ln -s /proc/self/fd /dev/fd && cd "$W"),
    # a perfectly usable /dev/shm, only not the one this client sees
    other: "mount -t tmpfs -o size=256m,mode=1777 tmpfs /dev/shm"
  }

  # The interpreter outside /root's 0700 (for another user): a tmpfs of
  # mode 755 over /root that holds only the bound .pyenv.
  @open_root "cd /root && mount -t tmpfs -o mode=755,size=1m tmpfs /root && " <>
               "mkdir /root/.pyenv && mount -c --bind ./.pyenv /root/.pyenv && cd /"

  setup_all do
    case System.cmd("unshare", ["--mount", "--propagation", "private", "sh", "-c", @setups.small],
           stderr_to_stdout: true
         ) do
      {_, 0} -> :ok
      {out, status} -> raise "unshare --mount failed (#{status}): #{out}; these tests need root"
    end

    dir = Path.join(System.tmp_dir!(), "zb-shmf-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    File.chmod!(dir, 0o777)
    on_exit(fn -> File.rm_rf(dir) end)
    %{dir: dir}
  end

  # A script that runs the real interpreter inside `setup` (and then `run`).
  defp wrapper(dir, name, setup, run \\ "") do
    script = Path.join(dir, "python-#{name}")

    File.write!(script, """
    #!/bin/sh
    exec unshare --mount --propagation private sh -c '#{setup} && exec #{run} "$@"' sh #{Python.python()} "$@"
    """)

    File.chmod!(script, 0o755)
    script
  end

  defp fresh(dir, name) do
    path = Path.join(dir, "#{name}-#{System.unique_integer([:positive])}")
    File.mkdir_p!(path)
    File.chmod!(path, 0o777)
    path
  end

  # float64 values with a checkable pattern: element i is i / 4 + k.
  defp ramp(n, k), do: for(i <- 0..(n - 1), into: <<>>, do: <<i / 4 + k::float-little-64>>)

  defp zarr_agrees?(path, n, k) do
    Python.run!(
      """
      import sys, zarr, numpy as np
      z = zarr.open_array(sys.argv[1], mode='r')
      want = np.arange(int(sys.argv[2])) / 4 + int(sys.argv[3])
      print(bool((z[...].reshape(-1) == want).all()))
      """,
      [path, Integer.to_string(n), Integer.to_string(k)]
    ) == "True\n"
  end

  # 16 MiB through Array.write and Array.read (each way the client allows),
  # and a 4 MiB+ upload through Sidecar.call with handoff: true.
  defp round_trips(sidecar, path) do
    {rows, cols} = {2048, 1024}
    n = rows * cols

    array =
      ZarrBridge.create!(
        path: path,
        shape: {rows, cols},
        chunks: {256, 256},
        dtype: :float64,
        compressor: {:zstd, level: 1},
        server: sidecar
      )

    for {opts, k} <- [{[], 0}, {[handoff: true], 1}, {[handoff: false], 2}] do
      data = ramp(n, k)
      assert :ok = Array.write(array, data, [timeout: 120_000] ++ opts)
      assert zarr_agrees?(path, n, k)

      for read_opts <- [[], [handoff: true], [handoff: false]] do
        assert {:ok, %NDArray{data: ^data}} = Array.read(array, [timeout: 120_000] ++ read_opts)
      end
    end

    data = ramp(512 * 1024, 7)

    assert {:ok, %{}} =
             Sidecar.call(
               sidecar,
               "array.write",
               %{
                 "store" => %{"kind" => "filesystem", "path" => path},
                 "path" => "",
                 "shape" => [512, 1024]
               },
               upload: data,
               handoff: true,
               timeout: 120_000
             )

    assert {:ok, %NDArray{data: ^data}} = Array.read(array, stop: {512, 1024}, handoff: true)
  end

  for fault <- [:small, :full, :ro, :missing, :other] do
    @fault fault
    test "a sidecar with a #{fault} /dev/shm serves 16 MiB reads and writes by the pipe",
         %{dir: dir} do
      python = wrapper(dir, @fault, @setups[@fault])
      sidecar = start_sidecar(python: python, workers: 2)
      {:ok, hello} = Sidecar.info(sidecar)
      os_pid = Sidecar.os_pid!(sidecar)
      assert hello["pid"] == os_pid

      status = hello["handoff"]
      assert status["dir"] == "/dev/shm"
      refute Sidecar.handoff_usable?(hello)

      if @fault == :other do
        assert status["usable"] == true
        assert status["dev"] != File.stat!("/dev/shm").major_device
      else
        assert status["usable"] == false
        assert status["reason"] =~ "/dev/shm"
      end

      round_trips(sidecar, fresh(dir, "#{@fault}"))
      assert Sidecar.os_pid!(sidecar) == os_pid
      assert {:ok, %{"pid" => ^os_pid}} = Sidecar.call(sidecar, "hello", %{})
    end
  end

  test "a sidecar running as another user gets uploads by the pipe", %{dir: dir} do
    run = "setpriv --reuid=nobody --regid=nogroup --clear-groups"
    python = wrapper(dir, "nobody", @open_root, run)
    sidecar = start_sidecar(python: python, workers: 2)
    {:ok, hello} = Sidecar.info(sidecar)
    os_pid = Sidecar.os_pid!(sidecar)

    round_trips(sidecar, fresh(dir, "nobody"))

    assert %{"usable" => true, "uid" => uid} = hello["handoff"]
    assert uid != 0
    refute Sidecar.handoff_usable?(hello)
    assert Sidecar.os_pid!(sidecar) == os_pid
    assert Path.wildcard("/dev/shm/pybridge-#{os_pid}-up-*") == []
  end

  test "with the client's own /dev/shm, handoff is usable" do
    sidecar = start_sidecar(workers: 1)
    {:ok, hello} = Sidecar.info(sidecar)
    assert %{"usable" => true, "reason" => nil} = hello["handoff"]
    assert Sidecar.handoff_usable?(hello)
    assert hello["handoff"]["dev"] == File.stat!("/dev/shm").major_device
    assert Sidecar.handoff_usable?(%{"pid" => 1})
    refute Sidecar.handoff_usable?(%{"handoff" => %{"usable" => false}})
  end
end
