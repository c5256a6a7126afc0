defmodule ZarrBridge.MetadataTest do
  # ZarrBridge.Metadata on its own: the wire map in, chunk keys and fill
  # values out. (The sidecar's side of these is checked end to end in
  # array_test.exs and interop_matrix_test.exs.)
  use ExUnit.Case, async: true

  alias ZarrBridge.{Error, Metadata}

  defp wire(overrides) do
    Map.merge(
      %{
        "zarr_format" => 3,
        "shape" => [4, 4],
        "chunks" => [2, 2],
        "dtype" => "int32",
        "fill_value" => 0,
        "order" => "C",
        "compressor" => %{"id" => "zstd", "level" => 0, "checksum" => false},
        "filters" => nil,
        "codecs" => [%{"name" => "bytes", "configuration" => %{"endian" => "little"}}],
        "dimension_separator" => "/",
        "chunk_key_encoding" => %{"name" => "default", "separator" => "/"},
        "dimension_names" => ["y", nil],
        "shards" => nil,
        "attributes" => %{"a" => {:bin, "x"}}
      },
      overrides
    )
  end

  test "from_wire builds the struct" do
    assert {:ok, %Metadata{} = m} = Metadata.from_wire(wire(%{}))
    assert m.shape == {4, 4} and m.chunks == {2, 2} and m.shards == nil
    assert m.dtype == :int32
    assert m.compressor == :zstd and m.compressor_config == [checksum: false, level: 0]
    assert m.chunk_key_encoding == {:default, "/"}
    assert m.dimension_names == ["y", nil]
    assert m.attributes == %{"a" => "x"}

    assert {:error, %Error{code: :invalid_metadata}} = Metadata.from_wire(%{"zarr_format" => 9})

    assert {:error, %Error{code: :unsupported_dtype}} =
             Metadata.from_wire(wire(%{"dtype" => "x"}))
  end

  test "the chunk key encoding: from the wire, else the format's default" do
    {:ok, m} =
      Metadata.from_wire(wire(%{"chunk_key_encoding" => %{"name" => "v2", "separator" => "/"}}))

    assert m.chunk_key_encoding == {:v2, "/"}

    {:ok, m} =
      Metadata.from_wire(Map.delete(wire(%{"dimension_separator" => "."}), "chunk_key_encoding"))

    assert m.chunk_key_encoding == {:default, "."}

    v2 =
      wire(%{"zarr_format" => 2, "dimension_separator" => nil})
      |> Map.delete("chunk_key_encoding")

    {:ok, m} = Metadata.from_wire(v2)
    assert m.chunk_key_encoding == {:v2, "."}
  end

  test "chunk_key/2 for every encoding, separator and rank" do
    key = fn cke, coords -> Metadata.chunk_key(%Metadata{chunk_key_encoding: cke}, coords) end
    assert key.({:default, "/"}, {0, 12, 3}) == "c/0/12/3"
    assert key.({:default, "."}, {1, 2}) == "c.1.2"
    assert key.({:default, "/"}, {}) == "c"
    assert key.({:v2, "."}, {1, 2}) == "1.2"
    assert key.({:v2, "/"}, {7}) == "7"
    assert key.({:v2, "."}, {}) == "0"
  end

  test "fill values: wire forms both ways, for every kind of dtype" do
    structured = [{"n", :int16}, {"c", :complex64}, {"b", {:fixed_bytes, 2}}]

    for {value, dtype, on_wire} <- [
          {{1.5, -2.0}, :complex128, [1.5, -2.0]},
          {"ab", {:fixed_bytes, 2}, {:bin, "ab"}},
          {"xyz", :bytes, {:bin, "xyz"}},
          {"é", :string, "é"},
          {:nan, :float32, :nan},
          {-9_223_372_036_854_775_808, {:datetime64, :ns}, -9_223_372_036_854_775_808},
          {%{"n" => 1, "c" => {0.0, 1.0}, "b" => "z"}, structured,
           {:bin, <<1::16-little, 0.0::32-float-little, 1.0::32-float-little, "z", 0>>}},
          {nil, :int8, nil}
        ] do
      assert Metadata.fill_value_to_wire(value, dtype) == {:ok, on_wire}, inspect(dtype)
      assert Metadata.fill_value(on_wire, dtype) == value, inspect(dtype)
    end

    assert {:error, %Error{code: :invalid_params}} =
             Metadata.fill_value_to_wire(%{"n" => 1}, structured)

    assert {:error, %Error{code: :invalid_params}} = Metadata.fill_value_to_wire(3, structured)
  end
end
