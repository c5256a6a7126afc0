defmodule ZarrBridge.NDArray.Elements do
  @moduledoc false
  # Elements <-> little-endian C-order bytes for every dtype of
  # ZarrBridge.NDArray (its module doc says which Elixir term each dtype's
  # elements are): encode/2 builds the binary (or, for :string and :bytes,
  # the list), decode/2 reads it back.

  import Kernel, except: [byte_size: 1]

  alias ZarrBridge.{Dtype, Error}

  # ------------------------------------------------------------------
  # encoding: list of elements -> binary (or list for variable-length)

  @doc false
  @spec encode([term], ZarrBridge.NDArray.dtype()) ::
          {:ok, binary | [binary]} | {:error, Error.t()}
  def encode(list, dtype) do
    {:ok, enc(list, dtype)}
  catch
    {:bad_value, value} ->
      index = Enum.find_index(list, &(&1 === value))

      {:error,
       error(
         :invalid_params,
         "element #{inspect(value, limit: 5)} at index #{index} does not fit dtype #{inspect(dtype)}",
         %{param: "data", index: index, value: value, dtype: dtype}
       )}
  end

  defp bad(value), do: throw({:bad_value, value})

  # Encoders append to a binary accumulator in a tail-recursive loop: the BEAM
  # then grows the binary in place, which is several times faster than a
  # `for ... into: <<>>` comprehension.

  @int_types [
    int8: {8, -0x80, 0x7F},
    int16: {16, -0x8000, 0x7FFF},
    int32: {32, -0x80000000, 0x7FFFFFFF},
    int64: {64, -0x8000000000000000, 0x7FFFFFFFFFFFFFFF},
    uint8: {8, 0, 0xFF},
    uint16: {16, 0, 0xFFFF},
    uint32: {32, 0, 0xFFFFFFFF},
    uint64: {64, 0, 0xFFFFFFFFFFFFFFFF}
  ]

  for {type, _} <- @int_types do
    defp enc(list, unquote(type)), do: unquote(:"enc_#{type}")(list, <<>>)
  end

  defp enc(list, :float16), do: enc_f16(list, <<>>)
  defp enc(list, :float32), do: enc_f32(list, <<>>)
  defp enc(list, :float64), do: enc_f64(list, <<>>)
  defp enc(list, :complex64), do: enc_c64(list, <<>>)
  defp enc(list, :complex128), do: enc_c128(list, <<>>)
  defp enc(list, :bool), do: enc_bool(list, <<>>)
  defp enc(list, {kind, _unit}) when kind in [:datetime64, :timedelta64], do: enc(list, :int64)

  defp enc(list, {:fixed_bytes, n}) do
    enc_with(list, <<>>, fn x ->
      if is_binary(x) and Kernel.byte_size(x) <= n,
        do: <<x::binary, 0::size((n - Kernel.byte_size(x)) * 8)>>,
        else: bad(x)
    end)
  end

  defp enc(list, {:fixed_unicode, n}) do
    enc_with(list, <<>>, fn x ->
      with true <- is_binary(x),
           utf32 when is_binary(utf32) <-
             :unicode.characters_to_binary(x, :utf8, {:utf32, :little}),
           true <- Kernel.byte_size(utf32) <= 4 * n do
        <<utf32::binary, 0::size((4 * n - Kernel.byte_size(utf32)) * 8)>>
      else
        _ -> bad(x)
      end
    end)
  end

  defp enc(list, :string) do
    Enum.each(list, fn x -> if not (is_binary(x) and String.valid?(x)), do: bad(x) end)
    list
  end

  defp enc(list, :bytes) do
    Enum.each(list, fn x -> if not is_binary(x), do: bad(x) end)
    list
  end

  defp enc(list, [_ | _] = fields) do
    enc_with(list, <<>>, fn record ->
      if not is_map(record), do: bad(record)

      for {name, type} <- fields, into: <<>> do
        case Map.fetch(record, name) do
          {:ok, value} ->
            try do
              enc([value], type)
            catch
              {:bad_value, _} -> bad(record)
            end

          :error ->
            bad(record)
        end
      end
    end)
  end

  for {type, {bits, min, max}} <- @int_types do
    fun = :"enc_#{type}"

    defp unquote(fun)([x | rest], acc)
         when is_integer(x) and x >= unquote(min) and x <= unquote(max),
         do: unquote(fun)(rest, <<acc::binary, x::little-size(unquote(bits))>>)

    defp unquote(fun)([], acc), do: acc
    defp unquote(fun)([x | _], _acc), do: bad(x)
  end

  defp enc_with([x | rest], acc, fun), do: enc_with(rest, <<acc::binary, fun.(x)::binary>>, fun)
  defp enc_with([], acc, _fun), do: acc

  defp enc_f16([x | rest], acc) when is_float(x),
    do: enc_f16(rest, <<acc::binary, x::float-little-16>>)

  defp enc_f16([x | rest], acc), do: enc_f16(rest, <<acc::binary, f16(x)::binary>>)
  defp enc_f16([], acc), do: acc

  defp enc_f32([x | rest], acc) when is_float(x),
    do: enc_f32(rest, <<acc::binary, x::float-little-32>>)

  defp enc_f32([x | rest], acc), do: enc_f32(rest, <<acc::binary, f32(x)::binary>>)
  defp enc_f32([], acc), do: acc

  defp enc_f64([x | rest], acc) when is_float(x),
    do: enc_f64(rest, <<acc::binary, x::float-little-64>>)

  defp enc_f64([x | rest], acc), do: enc_f64(rest, <<acc::binary, f64(x)::binary>>)
  defp enc_f64([], acc), do: acc

  defp enc_c64([{re, im} = x | rest], acc),
    do: enc_c64(rest, <<acc::binary, f32(re, x)::binary, f32(im, x)::binary>>)

  defp enc_c64([x | rest], acc), do: enc_c64(rest, <<acc::binary, f32(x)::binary, 0::32>>)
  defp enc_c64([], acc), do: acc

  defp enc_c128([{re, im} = x | rest], acc),
    do: enc_c128(rest, <<acc::binary, f64(re, x)::binary, f64(im, x)::binary>>)

  defp enc_c128([x | rest], acc), do: enc_c128(rest, <<acc::binary, f64(x)::binary, 0::64>>)
  defp enc_c128([], acc), do: acc

  defp enc_bool([true | rest], acc), do: enc_bool(rest, <<acc::binary, 1>>)
  defp enc_bool([false | rest], acc), do: enc_bool(rest, <<acc::binary, 0>>)
  defp enc_bool([], acc), do: acc
  defp enc_bool([x | _], _acc), do: bad(x)

  # Floats: a number, or one of the atoms for the values a BEAM float cannot
  # hold. The second argument is the element reported when the part is bad.
  defp f16(x, el \\ nil)
  defp f16(x, _el) when is_float(x), do: <<x::float-little-16>>
  defp f16(x, el) when is_integer(x), do: float_bits(fn -> <<x::float-little-16>> end, el || x)
  defp f16(:nan, _), do: <<0x00, 0x7E>>
  defp f16(:infinity, _), do: <<0x00, 0x7C>>
  defp f16(:neg_infinity, _), do: <<0x00, 0xFC>>
  defp f16(x, el), do: bad(el || x)

  defp f32(x, el \\ nil)
  defp f32(x, _el) when is_float(x), do: <<x::float-little-32>>
  defp f32(x, el) when is_integer(x), do: float_bits(fn -> <<x::float-little-32>> end, el || x)
  defp f32(:nan, _), do: <<0, 0, 0xC0, 0x7F>>
  defp f32(:infinity, _), do: <<0, 0, 0x80, 0x7F>>
  defp f32(:neg_infinity, _), do: <<0, 0, 0x80, 0xFF>>
  defp f32(x, el), do: bad(el || x)

  defp f64(x, el \\ nil)
  defp f64(x, _el) when is_float(x), do: <<x::float-little-64>>
  defp f64(x, el) when is_integer(x), do: float_bits(fn -> <<x::float-little-64>> end, el || x)
  defp f64(:nan, _), do: <<0, 0, 0, 0, 0, 0, 0xF8, 0x7F>>
  defp f64(:infinity, _), do: <<0, 0, 0, 0, 0, 0, 0xF0, 0x7F>>
  defp f64(:neg_infinity, _), do: <<0, 0, 0, 0, 0, 0, 0xF0, 0xFF>>
  defp f64(x, el), do: bad(el || x)

  # A float always fits (too large for float16/32 rounds to infinity); only an
  # integer beyond the float64 range makes the construction fail.
  defp float_bits(fun, el) do
    fun.()
  rescue
    ArgumentError -> bad(el)
  end

  # ------------------------------------------------------------------
  # decoding: binary (or list) -> list of elements

  @doc false
  @spec decode(binary | [binary], ZarrBridge.NDArray.dtype()) :: [term]
  def decode(bin, :int8), do: for(<<x::signed-8 <- bin>>, do: x)
  def decode(bin, :int16), do: for(<<x::little-signed-16 <- bin>>, do: x)
  def decode(bin, :int32), do: for(<<x::little-signed-32 <- bin>>, do: x)
  def decode(bin, :int64), do: for(<<x::little-signed-64 <- bin>>, do: x)
  def decode(bin, :uint8), do: :binary.bin_to_list(bin)
  def decode(bin, :uint16), do: for(<<x::little-16 <- bin>>, do: x)
  def decode(bin, :uint32), do: for(<<x::little-32 <- bin>>, do: x)
  def decode(bin, :uint64), do: for(<<x::little-64 <- bin>>, do: x)
  # Floats: a float segment does not match NaN or the infinities, and a binary
  # generator stops at the first element that does not match. So the fast
  # comprehension is tried first, and when it stopped short the slow one,
  # which reads those values from their bits, runs instead.
  def decode(bin, :float16) do
    fast = for <<x::float-little-16 <- bin>>, do: x
    if complete?(fast, bin, 2), do: fast, else: for(<<x::binary-2 <- bin>>, do: unf16(x))
  end

  def decode(bin, :float32) do
    fast = for <<x::float-little-32 <- bin>>, do: x
    if complete?(fast, bin, 4), do: fast, else: for(<<x::binary-4 <- bin>>, do: unf32(x))
  end

  def decode(bin, :float64) do
    fast = for <<x::float-little-64 <- bin>>, do: x
    if complete?(fast, bin, 8), do: fast, else: for(<<x::binary-8 <- bin>>, do: unf64(x))
  end

  def decode(bin, :complex64) do
    fast = for <<re::float-little-32, im::float-little-32 <- bin>>, do: {re, im}

    if complete?(fast, bin, 8),
      do: fast,
      else: for(<<re::binary-4, im::binary-4 <- bin>>, do: {unf32(re), unf32(im)})
  end

  def decode(bin, :complex128) do
    fast = for <<re::float-little-64, im::float-little-64 <- bin>>, do: {re, im}

    if complete?(fast, bin, 16),
      do: fast,
      else: for(<<re::binary-8, im::binary-8 <- bin>>, do: {unf64(re), unf64(im)})
  end

  def decode(bin, :bool), do: for(<<b <- bin>>, do: b != 0)
  def decode(bin, {kind, _unit}) when kind in [:datetime64, :timedelta64], do: decode(bin, :int64)
  def decode(bin, {:fixed_bytes, n}), do: for(<<x::binary-size(n) <- bin>>, do: trim_nul(x, 1))

  def decode(bin, {:fixed_unicode, n}) do
    for <<x::binary-size(4 * n) <- bin>> do
      case :unicode.characters_to_binary(trim_nul(x, 4), {:utf32, :little}, :utf8) do
        utf8 when is_binary(utf8) -> utf8
        _ -> raise ArgumentError, "invalid UTF-32 code point in #{inspect(x)}"
      end
    end
  end

  def decode(list, dtype) when dtype in [:string, :bytes] and is_list(list), do: list

  def decode(bin, [_ | _] = fields) do
    size = Dtype.itemsize(fields)

    for <<record::binary-size(size) <- bin>> do
      {map, <<>>} =
        Enum.reduce(fields, {%{}, record}, fn {name, type}, {map, rest} ->
          field_size = Dtype.itemsize(type)
          <<field::binary-size(field_size), rest::binary>> = rest
          [value] = decode(field, type)
          {Map.put(map, name, value), rest}
        end)

      map
    end
  end

  defp complete?(list, bin, itemsize), do: length(list) * itemsize == Kernel.byte_size(bin)

  # NaN and the infinities do not match a float segment: read their bits.
  defp unf16(<<x::float-little-16>>), do: x
  defp unf16(<<0x00, 0x7C>>), do: :infinity
  defp unf16(<<0x00, 0xFC>>), do: :neg_infinity
  defp unf16(_), do: :nan

  defp unf32(<<x::float-little-32>>), do: x
  defp unf32(<<0, 0, 0x80, 0x7F>>), do: :infinity
  defp unf32(<<0, 0, 0x80, 0xFF>>), do: :neg_infinity
  defp unf32(_), do: :nan

  defp unf64(<<x::float-little-64>>), do: x
  defp unf64(<<0, 0, 0, 0, 0, 0, 0xF0, 0x7F>>), do: :infinity
  defp unf64(<<0, 0, 0, 0, 0, 0, 0xF0, 0xFF>>), do: :neg_infinity
  defp unf64(_), do: :nan

  # Strips trailing all-zero units of `unit` bytes.
  defp trim_nul(bin, unit), do: binary_part(bin, 0, kept(bin, Kernel.byte_size(bin), unit))

  defp kept(_bin, 0, _unit), do: 0

  defp kept(bin, n, unit) do
    if binary_part(bin, n - unit, unit) == <<0::size(unit * 8)>>,
      do: kept(bin, n - unit, unit),
      else: n
  end

  defp error(code, message, details), do: %Error{code: code, message: message, details: details}
end
