defmodule ZarrBridge.Sidecar.RoutingTest do
  # How a payload travels is decided from the limits the sidecar announced
  # in hello, read by the caller without a message to the connection.
  # Watched with a receive trace on the connection process.
  use ZarrBridge.Test.SidecarCase, async: false

  alias ZarrBridge.Array

  # The messages the connection process received while `fun` ran.
  defp received_by(pid, fun) do
    :erlang.trace(pid, true, [:receive, {:tracer, self()}])
    result = fun.()
    :erlang.trace(pid, false, [:receive])
    {result, collect(pid, [])}
  end

  defp collect(pid, acc) do
    receive do
      {:trace, ^pid, :receive, message} -> collect(pid, [message | acc])
    after
      200 -> Enum.reverse(acc)
    end
  end

  defp calls(messages), do: for({:"$gen_call", _from, request} <- messages, do: request)

  test "an upload, by stream or by handoff, sends the connection no call" do
    sidecar = start_sidecar()
    # 8 MiB: over the stream frame size, and over the handoff threshold
    data = :binary.copy(<<1, 2, 3, 4>>, 2 * 1024 * 1024)

    for handoff <- [false, :auto, true] do
      {result, messages} =
        received_by(sidecar, fn ->
          ZarrBridge.Codecs.encode(:zlib, data, server: sidecar, handoff: handoff)
        end)

      assert {:ok, _} = result
      assert calls(messages) == [], "handoff: #{inspect(handoff)}: #{inspect(calls(messages))}"
    end
  end

  test "info and os_pid of a ready sidecar need no message" do
    sidecar = start_sidecar()

    {{info, os_pid}, messages} =
      received_by(sidecar, fn -> {Sidecar.info(sidecar), Sidecar.os_pid(sidecar)} end)

    assert {:ok, %{"pid" => pid}} = info
    assert os_pid == {:ok, pid}
    assert messages == []
  end

  test "a read asks for a handoff from the sidecar's threshold on, not the client's" do
    # A threshold below the 1 MiB the client used to apply by itself: a
    # 512 KiB result now comes by handoff (a reply frame of a few bytes).
    sidecar = start_sidecar(args: ["--handoff-threshold", "65536"])
    {:ok, hello} = Sidecar.info(sidecar)

    if Sidecar.handoff_usable?(hello) do
      {:ok, array} =
        ZarrBridge.create(
          shape: {65_536},
          dtype: :float64,
          storage: :memory,
          path: "routing",
          server: sidecar
        )

      {{:ok, nd}, messages} = received_by(sidecar, fn -> Array.read(array) end)
      assert byte_size(nd.data) == 512 * 1024

      frames = for {port, {:data, frame}} when is_port(port) <- messages, do: byte_size(frame)
      assert [reply] = frames
      assert reply < 1024, "the result came by the pipe (#{reply} bytes)"
    end
  end
end
