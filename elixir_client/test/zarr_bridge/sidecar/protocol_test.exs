defmodule ZarrBridge.Sidecar.ProtocolTest do
  # Pure frames: no sidecar, no Python.
  use ExUnit.Case, async: true

  alias ZarrBridge.{Error, Msgpack}
  alias ZarrBridge.Sidecar.Protocol

  test "a request is the header the connection adds plus the body the caller encoded" do
    {:ok, body, size} = Protocol.request_body("ping", %{"a" => 1})
    assert size == IO.iodata_length(body)

    for id <- [1, 127, 128, 65_536, Protocol.max_id()] do
      frame = IO.iodata_to_binary([Protocol.request_header(id) | body])
      assert Msgpack.decode(frame) == {:ok, [0, id, "ping", %{"a" => 1}]}
    end
  end

  test "params that msgpack cannot encode are invalid_params, before anything is sent" do
    assert {:error, %Error{code: :invalid_params}} =
             Protocol.request_body("ping", %{"f" => self()})
  end

  test "hello, notifications and stream frames decode to their PROTOCOL.md shapes" do
    assert {:ok, [0, 7, "hello", %{"protocol" => "1.0", "client" => "me"}]} =
             Msgpack.decode(IO.iodata_to_binary(Protocol.hello(7, "me")))

    assert {:ok, [2, "cancel", %{"id" => 3}]} =
             Msgpack.decode(IO.iodata_to_binary(Protocol.notification("cancel", %{"id" => 3})))

    assert {:ok, [2, "stream.data", %{"id" => 3, "data" => {:bin, "abc"}}]} =
             Msgpack.decode(IO.iodata_to_binary(Protocol.stream_data(3, ["a", "bc"])))
  end

  defp frame(term), do: term |> Msgpack.encode!() |> IO.iodata_to_binary()

  test "parse sorts what the sidecar sends" do
    assert Protocol.parse(frame([1, 5, nil, %{"x" => 1}])) ==
             {:ok, {:response, 5, {:ok, %{"x" => 1}}, %{"x" => 1}}}

    error = %{"code" => "invalid_params", "message" => "bad", "details" => %{}}

    assert {:ok, {:response, 5, {:error, %Error{code: :invalid_params}}, nil}} =
             Protocol.parse(frame([1, 5, error, nil]))

    # exactly one of error and result must be nil
    assert {:ok, {:response, 5, {:error, %Error{code: :invalid_message}}, %{}}} =
             Protocol.parse(frame([1, 5, error, %{}]))

    assert Protocol.parse(frame([2, "stream.data", %{"id" => 5, "data" => {:bin, "p"}}])) ==
             {:ok, {:stream_data, 5, "p"}}

    assert Protocol.parse(frame([2, "sidecar.failed", %{}])) ==
             {:ok, {:notification, "sidecar.failed", %{}}}

    assert Protocol.parse(frame([9, 9])) == {:ok, {:unknown, [9, 9]}}
    assert {:error, _} = Protocol.parse(<<0xC1>>)
  end

  test "complete checks a stream against what it announced" do
    result = %{"stream" => %{"frames" => 2, "bytes" => 3}, "shape" => [3]}

    assert {:stream, %{"shape" => [3]}, ["c", "ab"]} =
             stream = Protocol.complete({:ok, result}, ["c", "ab"], 2, 3)

    assert Protocol.join(stream) == {:ok, %{"shape" => [3], "data" => {:bin, "abc"}}}

    assert {:error, %Error{code: :invalid_message}} =
             Protocol.complete({:ok, result}, ["ab"], 1, 2)

    assert {:error, %Error{code: :invalid_message}} =
             Protocol.complete({:ok, %{"x" => 1}}, ["ab"], 1, 2)

    assert Protocol.complete({:ok, %{"x" => 1}}, [], 0, 0) == {:ok, %{"x" => 1}}
  end

  test "complete names a handoff file, and refuses a malformed one" do
    shm = %{"path" => "/dev/shm/pybridge-1-a", "bytes" => 4}

    assert Protocol.complete({:ok, %{"shm" => shm, "k" => 1}}, [], 0, 0) ==
             {:handoff, %{"k" => 1}, "/dev/shm/pybridge-1-a", 4}

    assert {:error, %Error{code: :invalid_message}} =
             Protocol.complete({:ok, %{"shm" => %{"path" => 1}}}, [], 0, 0)
  end

  test "versions of the same major are compatible" do
    assert Protocol.compatible?("1.0")
    assert Protocol.compatible?("1.7")
    refute Protocol.compatible?("2.0")
    refute Protocol.compatible?("10.0")
  end
end
