defmodule ZarrBridge.NDArrayTest do
  use ExUnit.Case, async: true

  alias ZarrBridge.{Error, NDArray}

  doctest NDArray

  defp roundtrip(list, dtype) do
    {:ok, nd} = NDArray.from_list(list, {length(list)}, dtype)
    NDArray.to_list(nd)
  end

  defp bytes(list, dtype) do
    {:ok, nd} = NDArray.from_list(list, {length(list)}, dtype)
    nd.data
  end

  describe "integers" do
    @ints [
      {:int8, 8, :signed},
      {:int16, 16, :signed},
      {:int32, 32, :signed},
      {:int64, 64, :signed},
      {:uint8, 8, :unsigned},
      {:uint16, 16, :unsigned},
      {:uint32, 32, :unsigned},
      {:uint64, 64, :unsigned}
    ]

    test "encode little-endian, decode back, at the boundaries" do
      for {dtype, bits, sign} <- @ints do
        {min, max} =
          case sign do
            :signed -> {-Bitwise.bsl(1, bits - 1), Bitwise.bsl(1, bits - 1) - 1}
            :unsigned -> {0, Bitwise.bsl(1, bits) - 1}
          end

        values = [min, max, 0, 1, div(max, 3), min + 1] |> Enum.uniq()
        expected = for v <- values, into: <<>>, do: <<v::little-size(bits)>>
        assert bytes(values, dtype) == expected, inspect(dtype)
        assert roundtrip(values, dtype) == values, inspect(dtype)

        for bad <- [min - 1, max + 1, 1.0, :nan, "1", nil, true] do
          assert {:error, %Error{code: :invalid_params, details: %{index: 1, value: ^bad}}} =
                   NDArray.from_list([0, bad], {2}, dtype),
                 "#{inspect(dtype)} accepted #{inspect(bad)}"
        end
      end
    end

    test "random values round-trip and match a hand-built encoding" do
      for {dtype, bits, sign} <- @ints, _ <- 1..20 do
        values =
          for _ <- 1..50 do
            n = :rand.uniform(Bitwise.bsl(1, bits)) - 1
            if sign == :signed, do: n - Bitwise.bsl(1, bits - 1), else: n
          end

        data = bytes(values, dtype)
        decoded = for <<x::little-size(bits) <- data>>, do: x

        decoded =
          if sign == :signed,
            do:
              Enum.map(
                decoded,
                &if(&1 >= Bitwise.bsl(1, bits - 1), do: &1 - Bitwise.bsl(1, bits), else: &1)
              ),
            else: decoded

        assert decoded == values
        assert roundtrip(values, dtype) == values
      end
    end

    test "int16 bytes are little-endian" do
      assert bytes([1, -2, 0x1234], :int16) == <<1, 0, 0xFE, 0xFF, 0x34, 0x12>>
      assert bytes([0xDEADBEEF], :uint32) == <<0xEF, 0xBE, 0xAD, 0xDE>>
    end
  end

  describe "floats" do
    test "float64: finite values, NaN and the infinities both ways" do
      values = [0.0, -1.5, 1.0e300, -2.5e-310, 3.141592653589793, :nan, :infinity, :neg_infinity]
      data = bytes(values, :float64)

      assert binary_part(data, 0, 40) ==
               <<0.0::float-little-64, -1.5::float-little-64, 1.0e300::float-little-64,
                 -2.5e-310::float-little-64, 3.141592653589793::float-little-64>>

      assert binary_part(data, 40, 24) ==
               <<0, 0, 0, 0, 0, 0, 0xF8, 0x7F>> <>
                 <<0, 0, 0, 0, 0, 0, 0xF0, 0x7F>> <> <<0, 0, 0, 0, 0, 0, 0xF0, 0xFF>>

      assert roundtrip(values, :float64) == values
    end

    test "float32: NaN and the infinities both ways, overflow rounds to infinity" do
      values = [1.5, -0.25, :nan, :infinity, :neg_infinity]
      data = bytes(values, :float32)

      assert data ==
               <<1.5::float-little-32, -0.25::float-little-32, 0, 0, 0xC0, 0x7F, 0, 0, 0x80, 0x7F,
                 0, 0, 0x80, 0xFF>>

      assert roundtrip(values, :float32) == values
      assert roundtrip([1.0e39, -1.0e39], :float32) == [:infinity, :neg_infinity]
      # float32 rounding of a float64
      assert roundtrip([0.1], :float32) == [0.10000000149011612]
    end

    test "float16: exact bit patterns, rounding, subnormals and specials" do
      cases = [
        {1.0, 0x3C00},
        {-2.0, 0xC000},
        {0.5, 0x3800},
        {65504.0, 0x7BFF},
        {0.0, 0x0000},
        {-0.0, 0x8000},
        {0.1, 0x2E66},
        {5.960464477539063e-8, 0x0001},
        {6.097555160522461e-5, 0x03FF},
        {6.103515625e-5, 0x0400},
        # ties go to even
        {1.00048828125, 0x3C00},
        {1.00146484375, 0x3C02},
        # beyond the largest half rounds to infinity
        {65520.0, 0x7C00},
        {1.0e10, 0x7C00},
        {-1.0e10, 0xFC00},
        # below half the smallest subnormal rounds to zero
        {2.0e-8, 0x0000},
        {:nan, 0x7E00},
        {:infinity, 0x7C00},
        {:neg_infinity, 0xFC00}
      ]

      for {value, bits} <- cases do
        assert bytes([value], :float16) == <<bits::little-16>>,
               "#{inspect(value)} should encode as 0x#{Integer.to_string(bits, 16)}"
      end

      decoded = [
        {0x3C00, 1.0},
        {0xC000, -2.0},
        {0x7BFF, 65504.0},
        {0x0001, 5.960464477539063e-8},
        {0x03FF, 6.097555160522461e-5},
        {0x2E66, 0.0999755859375},
        {0x7C00, :infinity},
        {0xFC00, :neg_infinity},
        {0x7E00, :nan},
        {0x7C01, :nan},
        {0xFE00, :nan},
        {0xFFFF, :nan}
      ]

      for {bits, value} <- decoded do
        {:ok, nd} = NDArray.new(<<bits::little-16>>, {1}, :float16)
        assert NDArray.to_list(nd) == [value]
      end
    end

    test "any NaN payload decodes as :nan" do
      {:ok, nd} =
        NDArray.new(
          <<1, 0, 0, 0, 0, 0, 0xF0, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF>>,
          {2},
          :float64
        )

      assert NDArray.to_list(nd) == [:nan, :nan]

      {:ok, nd} = NDArray.new(<<1, 0, 0x80, 0x7F, 0, 0, 0xC0, 0xFF>>, {2}, :float32)
      assert NDArray.to_list(nd) == [:nan, :nan]
    end

    test "a special value first, last or nowhere in a long array" do
      plain = for i <- 1..999, do: i * 0.5

      for dtype <- [:float16, :float32, :float64],
          values <- [plain, [:nan | plain], plain ++ [:infinity], plain ++ [:neg_infinity, 1.0]] do
        assert roundtrip(values, dtype) == values
      end

      pairs = Enum.map(plain, &{&1, -&1})

      for dtype <- [:complex64, :complex128],
          values <- [pairs, pairs ++ [{1.0, :nan}], [{:infinity, 0.0} | pairs]] do
        assert roundtrip(values, dtype) == values
      end
    end

    test "integers are accepted as floats; other terms are not" do
      assert roundtrip([1, -3], :float64) == [1.0, -3.0]
      assert roundtrip([7], :float16) == [7.0]

      for dtype <- [:float16, :float32, :float64], bad <- [:inf, "1.0", nil, {1.0, 0.0}] do
        assert {:error, %Error{code: :invalid_params}} = NDArray.from_list([bad], {1}, dtype)
      end

      # An integer beyond the float64 range
      assert {:error, %Error{code: :invalid_params}} =
               NDArray.from_list([Integer.pow(10, 400)], {1}, :float64)
    end
  end

  describe "other dtypes" do
    test "bool: true/false as 1/0 bytes; any non-zero byte reads as true" do
      assert bytes([true, false, true], :bool) == <<1, 0, 1>>
      assert roundtrip([true, false], :bool) == [true, false]
      {:ok, nd} = NDArray.new(<<0, 1, 2, 255>>, {4}, :bool)
      assert NDArray.to_list(nd) == [false, true, true, true]
      assert {:error, %Error{code: :invalid_params}} = NDArray.from_list([1], {1}, :bool)
    end

    test "complex64 and complex128 as {re, im}, with NaN and infinities" do
      values = [{1.0, -2.0}, {:nan, :infinity}, {0.0, :neg_infinity}]

      assert bytes([{1.0, -2.0}], :complex64) == <<1.0::float-little-32, -2.0::float-little-32>>
      assert bytes([{1.0, -2.0}], :complex128) == <<1.0::float-little-64, -2.0::float-little-64>>
      assert roundtrip(values, :complex64) == values
      assert roundtrip(values, :complex128) == values
      # a plain number is {x, 0}
      assert roundtrip([3, 2.5], :complex128) == [{3.0, 0.0}, {2.5, 0.0}]

      for bad <- [{1.0}, {1.0, 2.0, 3.0}, {1.0, "x"}, {:nan, nil}] do
        assert {:error, %Error{code: :invalid_params}} = NDArray.from_list([bad], {1}, :complex64)
      end
    end

    test "datetime64 and timedelta64 as int64, NaT as -2^63" do
      nat = -9_223_372_036_854_775_808
      values = [0, 1_700_000_000_000_000_000, -1, nat]

      for dtype <- [{:datetime64, :ns}, {:timedelta64, :s}, {:datetime64, {10, :ms}}] do
        assert bytes(values, dtype) == for(v <- values, into: <<>>, do: <<v::little-signed-64>>)
        assert roundtrip(values, dtype) == values
      end

      assert bytes([nat], {:datetime64, :D}) == <<0, 0, 0, 0, 0, 0, 0, 0x80>>

      assert {:error, %Error{code: :invalid_params}} =
               NDArray.from_list([nat - 1], {1}, {:datetime64, :ns})
    end

    test "fixed bytes: zero-padded, trailing zeros stripped on read" do
      dtype = {:fixed_bytes, 4}

      assert bytes(["ab", "", "abcd", <<0, 1>>], dtype) ==
               "ab\0\0" <> "\0\0\0\0" <> "abcd" <> <<0, 1, 0, 0>>

      assert roundtrip(["ab", "", "abcd", <<0, 1>>], dtype) == ["ab", "", "abcd", <<0, 1>>]
      # NumPy's S semantics: trailing NULs cannot survive
      assert roundtrip([<<1, 0>>], dtype) == [<<1>>]
      assert {:error, %Error{code: :invalid_params}} = NDArray.from_list(["abcde"], {1}, dtype)
      assert {:error, %Error{code: :invalid_params}} = NDArray.from_list([:ab], {1}, dtype)
    end

    test "fixed unicode: UTF-32LE, zero-padded, counted in code points" do
      dtype = {:fixed_unicode, 3}
      assert bytes(["aé"], dtype) == <<?a::little-32, 0xE9::little-32, 0::32>>
      # a code point outside the BMP is one UTF-32 unit
      assert bytes(["😀"], dtype) == <<0x1F600::little-32, 0::64>>
      values = ["", "abc", "日本", "😀x"]
      assert roundtrip(values, dtype) == values

      assert {:error, %Error{code: :invalid_params, details: %{value: "abcd"}}} =
               NDArray.from_list(["abcd"], {1}, dtype)

      assert {:error, %Error{code: :invalid_params}} =
               NDArray.from_list([<<0xFF, 0xFE>>], {1}, dtype)

      {:ok, bad} = NDArray.new(<<0x110000::little-32>>, {1}, {:fixed_unicode, 1})
      assert_raise ArgumentError, fn -> NDArray.to_list(bad) end
    end

    test "string and bytes hold lists of binaries" do
      {:ok, nd} = NDArray.from_list(["a", "", "日本"], {3}, :string)
      assert nd.data == ["a", "", "日本"]
      assert NDArray.byte_size(nd) == 7
      assert NDArray.to_nested(nd) == {"a", "", "日本"}

      assert {:error, %Error{code: :invalid_params}} = NDArray.from_list([<<0xFF>>], {1}, :string)

      assert {:ok, %NDArray{data: [<<0xFF>>, ""]}} =
               NDArray.from_list([<<0xFF>>, ""], {2}, :bytes)

      assert {:error, %Error{code: :invalid_params}} = NDArray.from_list([1], {1}, :bytes)
      assert {:ok, _} = NDArray.new(["x", "y"], {2}, :bytes)
      assert {:error, %Error{code: :data_size_mismatch}} = NDArray.new(["x"], {2}, :bytes)
      assert {:error, %Error{code: :invalid_params}} = NDArray.new("xy", {2}, :bytes)
      assert {:error, %Error{code: :invalid_params}} = NDArray.new([<<0xC3>>], {1}, :string)
    end

    test "structured: a map per record, fields packed in order" do
      dtype = [{"id", :uint16}, {"value", :float32}, {"ok", :bool}]

      records = [
        %{"id" => 1, "value" => 0.5, "ok" => true},
        %{"id" => 2, "value" => :nan, "ok" => false}
      ]

      assert bytes(records, dtype) ==
               <<1::little-16, 0.5::float-little-32, 1, 2::little-16, 0, 0, 0xC0, 0x7F, 0>>

      assert roundtrip(records, dtype) == records

      assert {:error, %Error{code: :invalid_params}} =
               NDArray.from_list([%{"id" => 1, "value" => 0.5}], {1}, dtype)

      assert {:error, %Error{code: :invalid_params}} =
               NDArray.from_list([%{"id" => -1, "value" => 0.5, "ok" => true}], {1}, dtype)
    end
  end

  describe "shapes and nesting" do
    test "from_nested infers the shape; to_nested gives it back" do
      cases = [
        {{1, 2, 3}, {3}},
        {{{1, 2, 3}, {4, 5, 6}}, {2, 3}},
        {{{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}, {{9, 10}, {11, 12}}}, {3, 2, 2}},
        {{{{{1}}}}, {1, 1, 1, 1}},
        {7, {}},
        {{}, {0}},
        {{{}, {}}, {2, 0}}
      ]

      for {nested, shape} <- cases do
        {:ok, nd} = NDArray.from_nested(nested, :int32)
        assert nd.shape == shape
        assert NDArray.size(nd) == NDArray.size(shape)
        assert NDArray.byte_size(nd) == 4 * NDArray.size(shape)
        assert NDArray.to_nested(nd) == nested
      end
    end

    test "the data is in C order" do
      {:ok, nd} = NDArray.from_nested({{1, 2, 3}, {4, 5, 6}}, :uint8)
      assert nd.data == <<1, 2, 3, 4, 5, 6>>
      {:ok, nd} = NDArray.new(<<1, 2, 3, 4, 5, 6>>, {3, 2}, :uint8)
      assert NDArray.to_nested(nd) == {{1, 2}, {3, 4}, {5, 6}}
    end

    test "lists are accepted in place of tuples" do
      {:ok, nd} = NDArray.from_nested([[1, 2], {3, 4}], :int8)
      assert nd.shape == {2, 2}
      assert NDArray.to_list(nd) == [1, 2, 3, 4]
    end

    test "complex elements are 2-tuples, not a dimension" do
      nested = {{{1.0, 2.0}, {3.0, 4.0}, {5.0, 6.0}}}
      {:ok, nd} = NDArray.from_nested(nested, :complex64)
      assert nd.shape == {1, 3}
      assert NDArray.to_nested(nd) == nested

      {:ok, scalar} = NDArray.from_nested({1.0, 2.0}, :complex128)
      assert scalar.shape == {}
    end

    test "ragged data is a data_size_mismatch" do
      for ragged <- [{{1, 2}, {3}}, {{1, 2}, 3}, {1, {2}}, {{{1}, {2}}, {{3}, {}}}] do
        assert {:error, %Error{code: :data_size_mismatch}} = NDArray.from_nested(ragged, :int8)
      end
    end

    test "new/3 checks the byte size, the shape and the dtype" do
      assert {:ok, %NDArray{shape: {2, 2}, dtype: :float32}} =
               NDArray.new(<<0::128>>, {2, 2}, "float32")

      assert {:error, %Error{code: :data_size_mismatch, details: %{expected: 16, got: 15}}} =
               NDArray.new(<<0::120>>, {2, 2}, :float32)

      assert {:error, %Error{code: :invalid_params}} = NDArray.new(<<>>, [0], :int8)
      assert {:error, %Error{code: :invalid_params}} = NDArray.new(<<>>, {-1}, :int8)
      assert {:error, %Error{code: :unsupported_dtype}} = NDArray.new(<<>>, {0}, :int128)
      assert {:error, %Error{code: :invalid_params}} = NDArray.new([<<0>>], {1}, :int8)
      assert_raise Error, fn -> NDArray.new!(<<0>>, {2}, :int8) end
    end

    test "from_list/3 checks the length" do
      assert {:error, %Error{code: :data_size_mismatch, details: %{expected: 6, got: 5}}} =
               NDArray.from_list([1, 2, 3, 4, 5], {2, 3}, :int8)

      assert %NDArray{} = NDArray.from_list!([1, 2], {2}, :int8)
      assert_raise Error, fn -> NDArray.from_list!([1], {2}, :int8) end
      assert_raise Error, fn -> NDArray.from_nested!({1, :x}, :int8) end
    end

    test "a large array converts both ways" do
      n = 1_000_000
      list = for i <- 1..n, do: i * 0.5
      {:ok, nd} = NDArray.from_list(list, {1000, 1000}, :float64)
      assert byte_size(nd.data) == 8 * n
      assert NDArray.to_list(nd) == list
      nested = NDArray.to_nested(nd)
      assert tuple_size(nested) == 1000
      assert elem(elem(nested, 999), 999) == n * 0.5
      assert NDArray.from_nested!(nested, :float64) == nd
    end
  end
end
