defmodule ZarrBridge.DtypeTest do
  use ExUnit.Case, async: true

  alias ZarrBridge.{Dtype, Error}
  alias ZarrBridge.Test.Python

  @pairs [
    {:bool, "bool", 1},
    {:int8, "int8", 1},
    {:int16, "int16", 2},
    {:int32, "int32", 4},
    {:int64, "int64", 8},
    {:uint8, "uint8", 1},
    {:uint16, "uint16", 2},
    {:uint32, "uint32", 4},
    {:uint64, "uint64", 8},
    {:float16, "float16", 2},
    {:float32, "float32", 4},
    {:float64, "float64", 8},
    {:complex64, "complex64", 8},
    {:complex128, "complex128", 16},
    {{:datetime64, :ns}, "datetime64[ns]", 8},
    {{:datetime64, :D}, "datetime64[D]", 8},
    {{:datetime64, {10, :s}}, "datetime64[10s]", 8},
    {{:timedelta64, :us}, "timedelta64[us]", 8},
    {{:timedelta64, :as}, "timedelta64[as]", 8},
    {{:fixed_bytes, 5}, "S5", 5},
    {{:fixed_unicode, 3}, "U3", 12},
    {[{"x", :int32}, {"y", :float64}], [["x", "int32"], ["y", "float64"]], 12},
    {[{"t", {:datetime64, :ms}}, {"flag", :bool}, {"name", {:fixed_unicode, 2}}],
     [["t", "datetime64[ms]"], ["flag", "bool"], ["name", "U2"]], 17}
  ]

  test "every dtype converts to its wire name and back, with its item size" do
    for {dtype, wire, itemsize} <- @pairs do
      assert Dtype.to_wire(dtype) == {:ok, wire}
      assert Dtype.from_wire(wire) == {:ok, dtype}
      assert Dtype.itemsize(dtype) == itemsize
      assert Dtype.valid?(dtype)
    end
  end

  test "the variable-length dtypes" do
    for {dtype, wire} <- [string: "string", bytes: "bytes"] do
      assert Dtype.to_wire(dtype) == {:ok, wire}
      assert Dtype.from_wire(wire) == {:ok, dtype}
      assert Dtype.itemsize(dtype) == :variable
      assert Dtype.variable?(dtype)
    end

    refute Dtype.variable?(:int8)
  end

  test "every time unit converts both ways" do
    for kind <- [:datetime64, :timedelta64], unit <- Dtype.units() do
      assert {:ok, wire} = Dtype.to_wire({kind, unit})
      assert wire == "#{kind}[#{unit}]"
      assert Dtype.from_wire(wire) == {:ok, {kind, unit}}
    end

    # A count of 1 is the plain unit.
    assert Dtype.to_wire({:datetime64, {1, :s}}) == {:ok, "datetime64[s]"}
    assert Dtype.from_wire("datetime64[1s]") == {:ok, {:datetime64, :s}}
  end

  test "atom field names of structured dtypes become strings" do
    assert Dtype.to_wire([{:a, :int8}]) == {:ok, [["a", "int8"]]}
    assert Dtype.normalize([{:a, :int8}]) == {:ok, [{"a", :int8}]}
  end

  test "normalize accepts Elixir dtypes and wire names" do
    assert Dtype.normalize(:float64) == {:ok, :float64}
    assert Dtype.normalize("float64") == {:ok, :float64}
    assert Dtype.normalize("datetime64[ns]") == {:ok, {:datetime64, :ns}}
    assert {:error, %Error{code: :unsupported_dtype}} = Dtype.normalize("<f8")
  end

  test "unknown dtypes are unsupported_dtype errors naming the dtype" do
    for bad <- [
          :float128,
          :object,
          "float128",
          "object",
          "<f8",
          "datetime64",
          "datetime64[]",
          "datetime64[0s]",
          "datetime64[-1s]",
          "datetime64[+5s]",
          "datetime64[ns]]",
          "datetime64[parsec]",
          "S0",
          "U0",
          "S",
          "U-1",
          "S3x",
          {:fixed_bytes, 0},
          {:fixed_unicode, -1},
          {:datetime64, :parsec},
          {:datetime64, {0, :s}},
          [{"s", :string}],
          [{"b", :bytes}],
          [["s", "string"]],
          [{"x", :int8} | :improper],
          [],
          nil,
          42
        ] do
      assert {:error, %Error{code: :unsupported_dtype, details: %{dtype: ^bad}}} =
               if(is_binary(bad) or (is_list(bad) and match?([[_, _] | _], bad)),
                 do: Dtype.from_wire(bad),
                 else: Dtype.to_wire(bad)
               ),
             "expected #{inspect(bad)} to be unsupported"

      refute Dtype.valid?(bad)
    end
  end

  test "item sizes agree with NumPy's for every wire dtype" do
    wires = for {_dtype, wire, _} <- @pairs, is_binary(wire), do: wire

    out =
      Python.run!(
        """
        import sys, numpy as np
        for name in sys.argv[1:]:
            print(name, np.dtype(name).itemsize)
        """,
        wires
      )

    numpy =
      for line <- String.split(out, "\n", trim: true), into: %{} do
        [name, size] = String.split(line, " ")
        {name, String.to_integer(size)}
      end

    for {dtype, wire, _} <- @pairs, is_binary(wire) do
      assert Dtype.itemsize(dtype) == Map.fetch!(numpy, wire), wire
    end
  end
end
