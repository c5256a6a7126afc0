defmodule ZarrBridge.ProtocolVectorsTest do
  # The shared vectors of protocol/vectors/ (see its README.md): the
  # sidecar's test suite runs the same file, so both halves agree on every
  # byte.
  use ExUnit.Case, async: true

  alias ZarrBridge.{Error, Msgpack}
  alias ZarrBridge.Test.JSON

  @path Path.expand("../../../protocol/vectors/vectors.json", __DIR__)
  @external_resource @path

  @document @path |> File.read!() |> JSON.decode!()

  test "the vector file has the schema this test reads" do
    assert @document["schema"] == 1
    assert length(@document["vectors"]) > 40
    assert length(@document["invalid"]) > 0
  end

  for vector <- @document["vectors"] do
    @vector vector

    test "vector #{vector["name"]} (#{vector["kind"]}): decode#{unless vector["decode_only"], do: " and encode"}" do
      bytes = Base.decode16!(@vector["hex"], case: :lower)
      expected = typed(@vector["value"])

      assert Msgpack.decode(bytes) == {:ok, expected}

      assert Base.decode16!(@vector["frame_hex"], case: :lower) ==
               <<byte_size(bytes)::32, bytes::binary>>

      unless @vector["decode_only"] do
        assert {:ok, iodata} = Msgpack.encode(expected)
        assert IO.iodata_to_binary(iodata) == bytes
      end

      check_message(@vector["kind"], expected)
    end
  end

  for invalid <- @document["invalid"] do
    @invalid invalid

    test "invalid #{invalid["name"]} is rejected" do
      bytes = Base.decode16!(@invalid["hex"], case: :lower)
      assert {:error, _reason} = Msgpack.decode(bytes)
    end
  end

  # Messages also have the shapes of PROTOCOL.md section 2, and their errors
  # map to documented codes.
  defp check_message("request", message) do
    assert [0, id, method, params] = message
    assert id in 0..0xFFFF_FFFF and is_binary(method) and is_map(params)
  end

  defp check_message("response", [1, id, nil, result]) do
    assert id in 0..0xFFFF_FFFF and is_map(result)
  end

  defp check_message("response", [1, id, error, nil]) do
    assert id in 0..0xFFFF_FFFF
    assert %Error{code: code, details: details} = Error.from_wire(error)
    assert Atom.to_string(code) == error["code"]
    refute Map.has_key?(details, "code")
  end

  defp check_message("notification", message) do
    assert [2, method, params] = message
    assert is_binary(method) and is_map(params)
  end

  defp check_message("value", _value), do: :ok

  # The typed JSON form -> the Elixir term ZarrBridge.Msgpack uses.
  defp typed(%{"nil" => nil}), do: nil
  defp typed(%{"bool" => b}) when is_boolean(b), do: b
  defp typed(%{"int" => n}) when is_integer(n), do: n
  defp typed(%{"float" => "nan"}), do: :nan
  defp typed(%{"float" => "inf"}), do: :infinity
  defp typed(%{"float" => "-inf"}), do: :neg_infinity
  defp typed(%{"float" => x}) when is_float(x), do: x
  defp typed(%{"str" => s}) when is_binary(s), do: s
  defp typed(%{"bin" => hex}), do: {:bin, Base.decode16!(hex, case: :lower)}
  defp typed(%{"array" => items}), do: Enum.map(items, &typed/1)
  defp typed(%{"map" => pairs}), do: Map.new(pairs, fn [k, v] -> {typed(k), typed(v)} end)
end
