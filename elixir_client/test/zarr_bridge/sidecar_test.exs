defmodule ZarrBridge.SidecarTest do
  # Not async: these tests start sidecars, kill them and time replies, and
  # the machine has two cores.
  use ZarrBridge.Test.SidecarCase, async: false

  import Bitwise
  import ExUnit.CaptureLog

  @mib 1024 * 1024

  # The examples call the application's default sidecar.
  doctest ZarrBridge.Sidecar

  describe "start options" do
    test "unknown options and bad values raise ArgumentError" do
      assert_raise ArgumentError, ~r/unknown option :wrokers/, fn ->
        Sidecar.start_link(wrokers: 2)
      end

      assert_raise ArgumentError, ~r/invalid value for :workers: 0/, fn ->
        Sidecar.start_link(workers: 0)
      end

      assert_raise ArgumentError, ~r/invalid value for :env/, fn ->
        Sidecar.start_link(env: [{"A", 1}])
      end

      assert_raise ArgumentError, ~r/invalid value for :args/, fn ->
        Sidecar.start_link(args: [:verbose])
      end

      assert_raise ArgumentError, ~r/keyword list/, fn -> Sidecar.start_link([:oops]) end
    end

    test "child_spec/1 uses the name as id" do
      assert %{id: MySidecar, start: {Sidecar, :start_link, [[name: MySidecar]]}} =
               Sidecar.child_spec(name: MySidecar)

      assert %{id: Sidecar} = Sidecar.child_spec([])
    end

    test "the sidecar gets workers, allowed roots and pickle from the options" do
      root = Path.join(System.tmp_dir!(), "zb-root-#{System.unique_integer([:positive])}")

      pid = start_sidecar(workers: 2, allowed_roots: [root], allow_pickle: true)

      {:ok, hello} = Sidecar.info(pid)
      assert hello["workers"] == 2
      assert hello["pid"] == Sidecar.os_pid!(pid)
      assert "test_methods" in hello["capabilities"]

      cmdline = File.read!("/proc/#{Sidecar.os_pid!(pid)}/cmdline") |> String.split(<<0>>)

      assert ["-m", "pybridge", "--workers", "2", "--allowed-root", ^root, "--allow-pickle" | _] =
               Enum.drop_while(cmdline, &(&1 != "-m"))

      environ = File.read!("/proc/#{Sidecar.os_pid!(pid)}/environ") |> String.split(<<0>>)
      assert "PYTHONUNBUFFERED=1" in environ
      assert "PYBRIDGE_TEST_METHODS=1" in environ
    end

    test "call options are checked" do
      pid = start_sidecar()
      assert_raise ArgumentError, fn -> Sidecar.call(pid, "ping", %{}, tiemout: 5) end
      assert_raise ArgumentError, fn -> Sidecar.call(pid, "ping", %{}, upload: :data) end
    end
  end

  describe "calls" do
    test "100 processes x 50 calls: every reply matches its request" do
      pid = start_sidecar()
      {:ok, %{"limits" => %{"stream_frame_bytes" => stream_bytes}}} = Sidecar.info(pid)

      results =
        1..100
        |> Task.async_stream(
          fn _task ->
            for _ <- 1..50 do
              if :rand.uniform(2) == 1 do
                {:ok, %{"pong" => true}} = Sidecar.call(pid, "ping", %{})
                :ping
              else
                # Sizes spread over every order of magnitude up to 1 MiB.
                data = random_bytes(:rand.uniform(1 <<< Enum.random(0..20)) - 1)

                # A payload bigger than a stream frame goes as an upload.
                {:ok, %{"data" => {:bin, echoed}}} =
                  if byte_size(data) > stream_bytes,
                    do: Sidecar.call(pid, "echo", %{}, upload: data),
                    else: Sidecar.call(pid, "echo", %{"data" => {:bin, data}})

                ^data = echoed
                {:echo, byte_size(data)}
              end
            end
          end,
          max_concurrency: 100,
          timeout: 300_000
        )
        |> Enum.flat_map(fn {:ok, replies} -> replies end)

      assert length(results) == 5_000
      assert Enum.count(results, &(&1 == :ping)) > 2_000
      assert Enum.any?(results, &match?({:echo, n} when n > 256 * 1024, &1))
      assert Sidecar.call(pid, "ping", %{}) == {:ok, %{"pong" => true}}
    end

    test "a slow request does not hold up a ping sent after it" do
      pid = start_sidecar()
      slow = Task.async(fn -> Sidecar.call(pid, "sleep", %{"ms" => 2000}) end)
      # Let the sleep reach the sidecar first.
      Process.sleep(100)

      {micros, reply} = :timer.tc(fn -> Sidecar.call(pid, "ping", %{}) end)

      assert reply == {:ok, %{"pong" => true}}
      assert micros < 1_000_000
      assert Task.yield(slow, 0) == nil, "the sleep finished before the ping; nothing was shown"
      assert Task.await(slow, 10_000) == {:ok, %{"slept_ms" => 2000}}
    end

    test "a timeout cancels the request and leaves no message behind" do
      pid = start_sidecar()

      assert {:error, %Error{code: :timeout, details: %{timeout: 100}}} =
               Sidecar.call(pid, "sleep", %{"ms" => 5000}, timeout: 100)

      assert Process.info(self(), :messages) == {:messages, []}

      # The sidecar runs at most 32 requests at once (HANDLER_THREADS). Time
      # out more sleeps than that: unless the cancels reached it, a short
      # sleep would then wait about 5 s for a free handler.
      1..40
      |> Task.async_stream(fn _ -> Sidecar.call(pid, "sleep", %{"ms" => 5000}, timeout: 100) end,
        max_concurrency: 40
      )
      |> Enum.each(fn {:ok, reply} -> assert {:error, %Error{code: :timeout}} = reply end)

      assert Sidecar.call(pid, "sleep", %{"ms" => 50}, timeout: 3_000) ==
               {:ok, %{"slept_ms" => 50}}

      assert Sidecar.call(pid, "ping", %{}) == {:ok, %{"pong" => true}}
      assert elem(:sys.get_state(pid), 1).pending == %{}
      assert Process.info(self(), :messages) == {:messages, []}
    end

    test "the default deadline is the :call_timeout option" do
      pid = start_sidecar(call_timeout: 200)

      assert {:error, %Error{code: :timeout, details: %{timeout: 200}}} =
               Sidecar.call(pid, "sleep", %{"ms" => 3000})

      assert Sidecar.call(pid, "sleep", %{"ms" => 300}, timeout: 5_000) ==
               {:ok, %{"slept_ms" => 300}}
    end

    test "calls made while the sidecar starts wait for it" do
      pid = start_supervised!({Sidecar, env: [{"PYBRIDGE_TEST_METHODS", "1"}], workers: 1})
      assert elem(:sys.get_state(pid), 0) == :starting

      tasks = for _ <- 1..5, do: Task.async(fn -> Sidecar.call(pid, "ping", %{}) end)
      assert {:ok, %{"pid" => os_pid}} = Sidecar.info(pid)
      assert Task.await_many(tasks, 30_000) == List.duplicate({:ok, %{"pong" => true}}, 5)
      assert Sidecar.os_pid!(pid) == os_pid
    end

    test "call!/4 returns the result or raises the error" do
      pid = start_sidecar()
      assert Sidecar.call!(pid, "ping", %{}) == %{"pong" => true}

      error = assert_raise Error, fn -> Sidecar.call!(pid, "no.such.method", %{}) end
      assert error.code == :unknown_method
      assert Exception.message(error) =~ "unknown_method: "
    end

    test "a sidecar that is not running gives :sidecar_unavailable" do
      assert {:error, %Error{code: :sidecar_unavailable, details: %{reason: :noproc}}} =
               Sidecar.call(NoSuchSidecar, "ping", %{})

      {:ok, dead} = Task.start(fn -> :ok end)
      Process.sleep(50)

      assert {:error, %Error{code: :sidecar_unavailable}} = Sidecar.call(dead, "ping", %{})
    end
  end

  describe "bad input" do
    test "unknown method, wrong params and unencodable params, then ping" do
      pid = start_sidecar()

      assert {:error, %Error{code: :unknown_method, details: %{"method" => "nope"}}} =
               Sidecar.call(pid, "nope", %{})

      assert_ping(pid)

      assert {:error, %Error{code: :invalid_params, details: %{"param" => "ms"}}} =
               Sidecar.call(pid, "sleep", %{"ms" => "ten"})

      assert_ping(pid)

      assert {:error, %Error{code: :invalid_params, details: %{"param" => "extra"}}} =
               Sidecar.call(pid, "ping", %{"extra" => 1})

      assert_ping(pid)

      assert {:error, %Error{code: :invalid_params, message: "params cannot be encoded" <> _}} =
               Sidecar.call(pid, "echo", %{"data" => {:not, :msgpack}})

      assert_ping(pid)
    end

    test "an oversized request is refused before it is sent" do
      pid = start_sidecar(max_frame_bytes: 4096)

      assert {:error, %Error{code: :frame_too_large, details: %{bytes: bytes, limit: 4096}}} =
               Sidecar.call(pid, "echo", %{"data" => {:bin, random_bytes(5000)}})

      assert bytes > 5000
      assert elem(:sys.get_state(pid), 1).pending == %{}
      assert_ping(pid)

      small = random_bytes(4000)

      assert {:ok, %{"data" => {:bin, ^small}}} =
               Sidecar.call(pid, "echo", %{"data" => {:bin, small}})
    end

    test "the sidecar refuses a frame over its own limit and keeps serving" do
      pid =
        start_sidecar(
          args: ["--max-frame-bytes", "65536", "--stream-frame-bytes", "16384"],
          max_frame_bytes: 64 * @mib
        )

      assert {:ok, %{"limits" => %{"max_frame_bytes" => 65536}}} = Sidecar.info(pid)

      assert {:error, %Error{code: :frame_too_large, details: %{"limit" => 65536}}} =
               Sidecar.call(pid, "echo", %{"data" => {:bin, random_bytes(100_000)}})

      assert_ping(pid)

      # Uploads and results travel in stream frames below the limit.
      data = random_bytes(200_000)
      assert {:ok, %{"data" => {:bin, ^data}}} = Sidecar.call(pid, "echo", %{}, upload: data)
    end
  end

  describe "streams" do
    test "a 3 MiB upload comes back identical, in stream frames both ways" do
      pid = start_sidecar()
      {:ok, %{"limits" => %{"stream_frame_bytes" => stream_bytes}}} = Sidecar.info(pid)
      data = random_bytes(3 * @mib)

      {{:ok, result}, commands} =
        trace_port_commands(fn -> Sidecar.call(pid, "echo", %{}, upload: data) end)

      assert result == %{"data" => {:bin, data}}

      # Every piece of the upload was a frame of its own, below the limit.
      sizes = Enum.map(commands, &IO.iodata_length/1)
      assert length(sizes) == div(3 * @mib, stream_bytes)
      assert Enum.all?(sizes, &(&1 <= stream_bytes + 64))

      # And the result came back in frames, not as one.
      {{:ok, %{"data" => {:bin, ^data}}}, frames} =
        trace_frames(pid, fn -> Sidecar.call(pid, "echo", %{"data" => {:bin, data}}) end)

      assert length(frames) == div(3 * @mib, stream_bytes) + 1
      assert Enum.all?(frames, &(byte_size(&1) <= stream_bytes + 64))
    end

    @tag :soak
    @tag timeout: 300_000
    test "a 256 MiB echo: upload and streamed result" do
      pid = start_sidecar()
      data = random_bytes(256 * @mib)

      assert {:ok, %{"data" => {:bin, echoed}}} =
               Sidecar.call(pid, "echo", %{}, upload: data, timeout: 120_000)

      assert echoed == data
      assert_ping(pid)
    end

    test "a 256-byte echo is not streamed" do
      pid = start_sidecar()
      data = random_bytes(256)

      {reply, frames} =
        trace_frames(pid, fn -> Sidecar.call(pid, "echo", %{"data" => {:bin, data}}) end)

      assert reply == {:ok, %{"data" => {:bin, data}}}
      assert length(frames) == 1
    end

    test "a shared-memory handoff is read once and removed" do
      pid = start_sidecar(workers: 2)
      os_pid = Sidecar.os_pid!(pid)
      dir = Path.join(System.tmp_dir!(), "zb-handoff-#{System.unique_integer([:positive])}")
      on_exit(fn -> File.rm_rf!(dir) end)
      array = %{"store" => %{"kind" => "filesystem", "path" => dir}, "path" => ""}
      # 4 MiB: at the sidecar's default handoff threshold.
      data = random_bytes(4 * @mib)

      {:ok, _} =
        Sidecar.call(
          pid,
          "array.create",
          Map.merge(array, %{"shape" => [2048, 2048], "chunks" => [512, 2048], "dtype" => "uint8"})
        )

      {:ok, %{"bytes" => 4_194_304}} =
        Sidecar.call(pid, "array.write", Map.put(array, "shape", [2048, 2048]), upload: data)

      segments = fn -> MapSet.new(Path.wildcard("/dev/shm/pybridge-#{os_pid}-*")) end
      before = segments.()

      {reply, frames} =
        trace_frames(pid, fn ->
          Sidecar.call(pid, "array.read", Map.put(array, "handoff", true))
        end)

      assert reply ==
               {:ok, %{"dtype" => "uint8", "shape" => [2048, 2048], "data" => {:bin, data}}}

      # One frame: the bytes came through /dev/shm, not the pipe.
      assert [frame] = frames
      assert byte_size(frame) < 1024

      assert {:ok, [1, _id, nil, %{"shm" => %{"path" => "/dev/shm/pybridge-" <> _}}]} =
               ZarrBridge.Msgpack.decode(frame)

      # (the reading process removes the file right after its reply)
      assert eventually(fn -> segments.() == before end)

      # Without handoff the same bytes are streamed.
      assert Sidecar.call(pid, "array.read", array) == reply

      # A handoff whose caller gave up after the reply reached this client
      # is removed too. Hold the reply in the sidecar process's mailbox
      # until the caller has timed out.
      :erlang.trace(pid, true, [:receive])

      task =
        Task.async(fn ->
          Sidecar.call(pid, "array.read", Map.put(array, "handoff", true), timeout: 1_000)
        end)

      # The suspend request queues behind the call, which is sent first.
      assert_receive {:trace, ^pid, :receive, {:"$gen_cast", {:call, _, _, _, _}}}, 5_000
      :sys.suspend(pid)
      :erlang.trace(pid, false, [:receive])
      assert map_size(elem(:sys.get_state(pid), 1).pending) == 1

      assert eventually(fn -> Process.info(pid, :message_queue_len) >= {:message_queue_len, 1} end)

      assert {:error, %Error{code: :timeout}} = Task.await(task)
      :sys.resume(pid)

      assert_ping(pid)
      assert eventually(fn -> segments.() == before end, 2_000), "left: #{inspect(segments.())}"
    end

    test "an iodata upload is sent without joining it first" do
      pid = start_sidecar()
      parts = for _ <- 1..7, do: random_bytes(100_000)
      iodata = [parts, ["tail" | "end"]]
      expected = IO.iodata_to_binary(iodata)

      assert Sidecar.call(pid, "echo", %{}, upload: iodata) ==
               {:ok, %{"data" => {:bin, expected}}}

      assert Sidecar.call(pid, "echo", %{}, upload: "") == {:ok, %{"data" => {:bin, ""}}}
    end
  end

  describe "sidecar exits" do
    @tag :capture_log
    test "SIGKILL fails the 20 pending calls at once; the next call runs on a new sidecar" do
      pid = start_sidecar()
      old_os_pid = Sidecar.os_pid!(pid)

      tasks =
        for _ <- 1..20, do: Task.async(fn -> Sidecar.call(pid, "sleep", %{"ms" => 20_000}) end)

      assert eventually(fn -> map_size(elem(:sys.get_state(pid), 1).pending) == 20 end, 5_000)

      {_, 0} = System.cmd("kill", ["-KILL", Integer.to_string(old_os_pid)])
      killed_at = System.monotonic_time(:millisecond)

      replies = Task.await_many(tasks, 5_000)
      elapsed = System.monotonic_time(:millisecond) - killed_at

      for reply <- replies do
        assert {:error, %Error{code: :sidecar_exited, details: %{exit_status: 137}}} = reply
      end

      assert elapsed < 1_000
      assert Sidecar.call(pid, "ping", %{}, timeout: 30_000) == {:ok, %{"pong" => true}}

      new_os_pid = Sidecar.os_pid!(pid)
      assert is_integer(new_os_pid) and new_os_pid != old_os_pid
      refute os_alive?(old_os_pid)
    end

    @tag :capture_log
    test "a crash of the sidecar is reported and it is restarted" do
      pid = start_sidecar()

      assert {:error, %Error{code: :sidecar_exited, details: %{exit_status: 70}}} =
               Sidecar.call(pid, "crash", %{})

      assert_ping(pid)
    end

    test "shared-memory leftovers of a dead sidecar are removed" do
      pid = start_sidecar()
      os_pid = Sidecar.os_pid!(pid)
      leftover = "/dev/shm/pybridge-#{os_pid}-leftover-test"
      File.write!(leftover, "x")

      capture_log(fn ->
        {_, 0} = System.cmd("kill", ["-KILL", Integer.to_string(os_pid)])

        assert eventually(
                 fn -> match?({:ok, new} when new != os_pid, Sidecar.os_pid(pid)) end,
                 10_000
               )
      end)

      refute File.exists?(leftover)
    end

    test "stopping the Sidecar leaves no Python process behind" do
      # Not under the test supervisor, which would restart it.
      {:ok, pid} = Sidecar.start_link(workers: 2)
      {:ok, _} = Sidecar.info(pid)
      os_pid = Sidecar.os_pid!(pid)
      # The sidecar starts its fork server and workers after hello.
      tree = eventually(fn -> tree_with_workers(os_pid, 2) end, 20_000)
      assert tree, "the sidecar's workers did not start"

      GenServer.stop(pid)

      assert eventually(fn -> not Enum.any?(tree, &os_alive?/1) end, 2_000),
             "still alive: #{inspect(Enum.filter(tree, &os_alive?/1))}"
    end

    @tag :capture_log
    test "a sidecar that cannot start: calls fail at once and restarts back off" do
      log =
        capture_log(fn ->
          pid = start_supervised!({Sidecar, python: "/nonexistent/python"})

          assert {:error, %Error{code: :sidecar_unavailable} = error} =
                   Sidecar.call(pid, "ping", %{})

          assert %{reason: {:python_not_found, "/nonexistent/python"}, retry_in_ms: ms} =
                   error.details

          assert is_integer(ms)
          assert error.message =~ "/nonexistent/python"
          assert error.message =~ "ZARR_BRIDGE_PYTHON"
          assert {:error, %Error{code: :sidecar_unavailable}} = Sidecar.info(pid)
          assert {:error, %Error{code: :sidecar_unavailable}} = Sidecar.os_pid(pid)

          Process.sleep(3_000)
          send(self(), {:pid, pid})
        end)

      assert_received {:pid, pid}

      attempts =
        log |> String.split("\n") |> Enum.count(&(&1 =~ inspect(pid) and &1 =~ "failure "))

      assert attempts in 2..7, "#{attempts} start attempts in 3 s:\n#{log}"
      assert log =~ "the :python option names \"/nonexistent/python\""
    end

    @tag :capture_log
    test "a sidecar of another major protocol version is refused, and not restarted" do
      # The real sidecar, told by a sitecustomize module that it speaks 2.0.
      dir = Path.join(System.tmp_dir!(), "zb-proto-#{System.unique_integer([:positive])}")
      File.mkdir_p!(dir)

      File.write!(
        Path.join(dir, "sitecustomize.py"),
        "import pybridge\npybridge.PROTOCOL_VERSION = '2.0'\n"
      )

      on_exit(fn -> File.rm_rf!(dir) end)
      pythonpath = Enum.join([dir | List.wrap(System.get_env("PYTHONPATH"))], ":")

      log =
        capture_log(fn ->
          pid = start_supervised!({Sidecar, env: [{"PYTHONPATH", pythonpath}]})

          assert {:error, %Error{code: :protocol_mismatch} = error} = Sidecar.info(pid)
          assert error.message =~ "2.0"
          assert {:error, ^error} = Sidecar.call(pid, "ping", %{})

          Process.sleep(500)
          assert {:error, %Error{code: :sidecar_unavailable}} = Sidecar.os_pid(pid)
          assert {:error, ^error} = Sidecar.call(pid, "ping", %{})
        end)

      assert length(String.split(log, "not restarting it")) == 2, log
    end

    @tag :capture_log
    test "a Python without pybridge: the failed import is reported" do
      python = System.find_executable("python3")

      {_, status} =
        System.cmd(python, ["-c", "import pybridge"],
          env: [{"PYTHONPATH", nil}],
          stderr_to_stdout: true
        )

      assert status != 0, "this test needs a python3 on the PATH that lacks pybridge"

      log =
        capture_log(fn ->
          pid = start_supervised!({Sidecar, python: python, env: [{"PYTHONPATH", nil}]})

          assert eventually(
                   fn ->
                     match?(
                       {:error,
                        %Error{
                          code: :sidecar_unavailable,
                          details: %{reason: {:pybridge_not_importable, _}}
                        }},
                       Sidecar.call(pid, "ping", %{})
                     )
                   end,
                   5_000
                 )
        end)

      assert log =~ "cannot import pybridge (ModuleNotFoundError: No module named 'pybridge')"
    end
  end

  describe "the application" do
    test "stopping it leaves no Python process of the default sidecar behind" do
      {:ok, _} = Sidecar.info(ZarrBridge.Sidecar)
      os_pid = Sidecar.os_pid!(ZarrBridge.Sidecar)
      tree = eventually(fn -> tree_with_workers(os_pid, 2) end, 20_000)
      assert tree, "the default sidecar's workers did not start"

      try do
        :ok = Application.stop(:zarr_bridge)

        assert eventually(fn -> not Enum.any?(tree, &os_alive?/1) end, 2_000),
               "still alive: #{inspect(Enum.filter(tree, &os_alive?/1))}"
      after
        {:ok, _} = Application.ensure_all_started(:zarr_bridge)
      end

      assert {:ok, _} = Sidecar.info(ZarrBridge.Sidecar)
      assert_ping(ZarrBridge.Sidecar)
    end

    @tag timeout: 120_000
    test "a BEAM killed with SIGKILL leaves no Python process behind" do
      {:ok, %{python: python}} = ZarrBridge.Sidecar.Launcher.resolve()
      ebin = Path.dirname(:code.which(Sidecar))
      script = Path.join(System.tmp_dir!(), "zb-child-#{System.unique_integer([:positive])}.exs")

      File.write!(script, """
      {:ok, _} = Application.ensure_all_started(:logger)
      {:ok, pid} = ZarrBridge.Sidecar.start_link(python: #{inspect(python)}, workers: 2)
      {:ok, _} = ZarrBridge.Sidecar.info(pid)
      IO.puts("SIDECAR_OS_PID=\#{ZarrBridge.Sidecar.os_pid!(pid)}")
      Process.sleep(:infinity)
      """)

      port =
        Port.open({:spawn_executable, System.find_executable("elixir")}, [
          :binary,
          :exit_status,
          :stderr_to_stdout,
          {:line, 1024},
          args: ["-pa", ebin, script]
        ])

      beam_os_pid = Port.info(port, :os_pid) |> elem(1)

      try do
        sidecar = await_line(port, "SIDECAR_OS_PID=") |> String.to_integer()
        assert sidecar in descendants(beam_os_pid)
        tree = eventually(fn -> tree_with_workers(sidecar, 2) end, 20_000)
        assert tree, "the child's sidecar workers did not start"

        {_, 0} = System.cmd("kill", ["-KILL", Integer.to_string(beam_os_pid)])
        assert_receive {^port, {:exit_status, 137}}, 5_000

        assert eventually(fn -> not Enum.any?(tree, &os_alive?/1) end, 2_000),
               "still alive: #{inspect(Enum.filter(tree, &os_alive?/1))}"
      after
        File.rm(script)
        System.cmd("kill", ["-KILL", Integer.to_string(beam_os_pid)], stderr_to_stdout: true)
      end
    end
  end

  ## Helpers

  defp assert_ping(server) do
    assert Sidecar.call(server, "ping", %{}, timeout: 30_000) == {:ok, %{"pong" => true}}
  end

  # The sidecar, its fork server and its workers, once at least `workers`
  # workers run (the fork server's children); nil before.
  defp tree_with_workers(os_pid, workers) do
    tree = descendants(os_pid)

    if Enum.any?(tree, &(length(descendants(&1)) >= workers)),
      do: [os_pid | tree],
      else: nil
  end

  defp await_line(port, prefix) do
    receive do
      {^port, {:data, {:eol, line}}} ->
        case String.split(line, prefix, parts: 2) do
          [_, rest] -> rest
          _ -> await_line(port, prefix)
        end

      {^port, {:exit_status, status}} ->
        flunk("the child BEAM exited with status #{status}")
    after
      30_000 -> flunk("the child BEAM printed no #{prefix}")
    end
  end

  # Runs fun and returns {its result, the iodata of every Port.command made
  # by this process meanwhile} (the pieces of an upload).
  defp trace_port_commands(fun) do
    tracer = start_collector()
    :erlang.trace_pattern({:erlang, :port_command, :_}, true, [])
    :erlang.trace(self(), true, [:call, {:tracer, tracer}])

    try do
      result = fun.()
      {result, collected(tracer, fn {:trace, _, :call, {_, _, [_port, data | _]}} -> data end)}
    after
      :erlang.trace(self(), false, [:call])
      :erlang.trace_pattern({:erlang, :port_command, :_}, false, [])
    end
  end

  # Runs fun and returns {its result, every frame the sidecar process
  # received from its port meanwhile}.
  defp trace_frames(pid, fun) do
    tracer = start_collector()
    :erlang.trace(pid, true, [:receive, {:tracer, tracer}])

    try do
      result = fun.()

      frames =
        tracer
        |> collected(fn
          {:trace, _, :receive, {port, {:data, frame}}} when is_port(port) -> frame
          _other -> nil
        end)
        |> Enum.reject(&is_nil/1)

      {result, frames}
    after
      :erlang.trace(pid, false, [:receive])
    end
  end

  defp start_collector do
    spawn_link(fn -> collect([]) end)
  end

  defp collect(acc) do
    receive do
      {:collected, from} -> send(from, {:collected, Enum.reverse(acc)})
      message -> collect([message | acc])
    end
  end

  defp collected(tracer, fun) do
    # Trace messages are delivered in order; a round trip through the
    # tracer after the traced work makes sure they have all arrived.
    :erlang.trace_delivered(:all)

    receive do
      {:trace_delivered, :all, _ref} -> :ok
    end

    send(tracer, {:collected, self()})

    receive do
      {:collected, messages} -> Enum.map(messages, fun)
    end
  end
end
