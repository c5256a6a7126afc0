defmodule ZarrBridge.NDArray do
  @moduledoc """
  An n-dimensional array in memory: `data`, `shape` and `dtype`.

  This is the fast path between Elixir and Zarr. `data` is a **little-endian,
  C-order binary** for every fixed-size dtype, and a **list of binaries** (one
  per element, C order) for the variable-length dtypes `:string` and `:bytes`.
  `shape` is a tuple of non-negative integers (`{}` for a 0-d array).

  ## Dtypes and element values

  | dtype | element value in Elixir |
  |---|---|
  | `:int8` … `:int64`, `:uint8` … `:uint64` | integer (range-checked on the way in) |
  | `:float16`, `:float32`, `:float64` | float, or `:nan`, `:infinity`, `:neg_infinity`; integers are accepted on the way in |
  | `:bool` | `true` / `false` (any non-zero byte reads as `true`) |
  | `:complex64`, `:complex128` | `{re, im}`, each part as for floats; a plain number is accepted on the way in as `{x, 0}` |
  | `{:datetime64, unit}`, `{:timedelta64, unit}` | int64 count of `unit`s since the epoch (a duration for timedelta); **NaT is `-9223372036854775808`** (`-2^63`), as in NumPy |
  | `{:fixed_bytes, n}` | binary of at most `n` bytes, zero-padded when stored; trailing zero bytes are stripped when read (NumPy's `S<n>` semantics) |
  | `{:fixed_unicode, n}` | UTF-8 string of at most `n` code points, stored as UTF-32LE zero-padded to `n` code points; trailing NUL code points are stripped when read (NumPy's `U<n>`) |
  | `:string` | UTF-8 binary (variable length) |
  | `:bytes` | binary (variable length) |
  | `[{name, dtype}]` (structured) | map from field name (string) to the field's value |

  `unit` is one of `:Y :M :W :D :h :m :s :ms :us :ns :ps :fs :as`, or
  `{count, unit}` for a multiple such as NumPy's `datetime64[10s]`.

  Floats use the raw bit patterns for NaN and the infinities, so they survive
  both directions (the BEAM cannot hold them as floats). Any NaN payload
  reads as `:nan`; `:nan` is written as the quiet NaN NumPy uses. Float
  values too large for `:float16`/`:float32` round to ±infinity, as in NumPy.

  ## Conversions

    * `from_list/3` and `to_list/1`: a flat list of elements in C order;
    * `from_nested/2` and `to_nested/1`: nested tuples, the format of
      `ZarrBridge.Array.get_slice/2` (a 2-d array is a tuple of row tuples;
      lists are accepted in place of tuples on the way in).

  ## Examples

      iex> {:ok, nd} = ZarrBridge.NDArray.from_list([1, 2, 3, 4, 5, 6], {2, 3}, :int16)
      iex> nd.data
      <<1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0>>
      iex> ZarrBridge.NDArray.to_nested(nd)
      {{1, 2, 3}, {4, 5, 6}}

      iex> {:ok, nd} = ZarrBridge.NDArray.from_nested({1.5, :nan, :neg_infinity}, :float32)
      iex> ZarrBridge.NDArray.to_list(nd)
      [1.5, :nan, :neg_infinity]
  """

  import Kernel, except: [byte_size: 1]

  alias ZarrBridge.{Dtype, Error}

  @enforce_keys [:data, :shape, :dtype]
  defstruct [:data, :shape, :dtype]

  @typedoc "A time unit of `:datetime64` and `:timedelta64`, as numpy names it."
  @type time_base_unit :: :Y | :M | :W | :D | :h | :m | :s | :ms | :us | :ns | :ps | :fs | :as
  @typedoc "A time unit, or a multiple of one (`{10, :ms}`)."
  @type time_unit :: time_base_unit | {pos_integer, time_base_unit}

  @typedoc "A dtype; see the module doc."
  @type dtype ::
          :bool
          | :int8
          | :int16
          | :int32
          | :int64
          | :uint8
          | :uint16
          | :uint32
          | :uint64
          | :float16
          | :float32
          | :float64
          | :complex64
          | :complex128
          | {:datetime64, time_unit}
          | {:timedelta64, time_unit}
          | {:fixed_bytes, pos_integer}
          | {:fixed_unicode, pos_integer}
          | :string
          | :bytes
          | [{String.t(), dtype}]

  @type float_value :: float | :nan | :infinity | :neg_infinity

  @typedoc "One element; which form depends on the dtype (see the module doc)."
  @type element ::
          integer | float_value | boolean | {float_value, float_value} | binary | map

  @type t :: %__MODULE__{data: binary | [binary], shape: tuple, dtype: dtype}

  @doc """
  Builds an NDArray from raw data, checking it against `shape` and `dtype`.

  `data` is a little-endian C-order binary of exactly `size * itemsize`
  bytes, or, for `:string`/`:bytes`, a list of `size` binaries (UTF-8 for
  `:string`). `dtype` may also be given as a wire dtype string such as
  `"float64"`.

  Errors: `:unsupported_dtype`, `:data_size_mismatch`, `:invalid_params`.
  """
  @spec new(binary | [binary], tuple, dtype | String.t()) :: {:ok, t} | {:error, Error.t()}
  def new(data, shape, dtype) do
    with {:ok, dtype} <- Dtype.normalize(dtype),
         {:ok, size} <- check_shape(shape),
         :ok <- check_data(data, size, dtype) do
      {:ok, %__MODULE__{data: data, shape: shape, dtype: dtype}}
    end
  end

  @doc "Like `new/3`, but raises `ZarrBridge.Error`."
  @spec new!(binary | [binary], tuple, dtype | String.t()) :: t
  def new!(data, shape, dtype), do: bang(new(data, shape, dtype))

  @doc """
  Builds an NDArray from a flat list of elements in C order.

  Errors: `:unsupported_dtype`, `:data_size_mismatch` (the list's length is
  not the shape's size), `:invalid_params` (an element does not fit the
  dtype; `details` has `index` and `value`).
  """
  @spec from_list([element], tuple, dtype | String.t()) :: {:ok, t} | {:error, Error.t()}
  def from_list(list, shape, dtype) when is_list(list) do
    with {:ok, dtype} <- Dtype.normalize(dtype),
         {:ok, size} <- check_shape(shape),
         :ok <- check_length(list, size),
         {:ok, data} <- encode(list, dtype) do
      {:ok, %__MODULE__{data: data, shape: shape, dtype: dtype}}
    end
  end

  @doc "Like `from_list/3`, but raises `ZarrBridge.Error`."
  @spec from_list!([element], tuple, dtype | String.t()) :: t
  def from_list!(list, shape, dtype), do: bang(from_list(list, shape, dtype))

  @doc """
  Builds an NDArray from nested tuples (or lists); the shape is inferred.

  A value that is not a tuple or list is a 0-d array. All the rows of one
  level must have the same length, or the error is `:data_size_mismatch`.
  For complex dtypes a 2-tuple of numbers is an element, not a dimension.
  """
  @spec from_nested(term, dtype | String.t()) :: {:ok, t} | {:error, Error.t()}
  def from_nested(nested, dtype) do
    with {:ok, dtype} <- Dtype.normalize(dtype),
         {:ok, shape, list} <- flatten(nested, dtype),
         {:ok, data} <- encode(list, dtype) do
      {:ok, %__MODULE__{data: data, shape: shape, dtype: dtype}}
    end
  end

  @doc "Like `from_nested/2`, but raises `ZarrBridge.Error`."
  @spec from_nested!(term, dtype | String.t()) :: t
  def from_nested!(nested, dtype), do: bang(from_nested(nested, dtype))

  @doc """
  Flattens nested tuples (or lists) to `{:ok, shape, flat_list}` without
  encoding them. Used by `ZarrBridge.Array.set_slice/3`.
  """
  @spec flatten(term, dtype) :: {:ok, tuple, [element]} | {:error, Error.t()}
  def flatten(nested, dtype) do
    dims = infer_dims(nested, dtype, [])
    list = nested |> flatten(dims, dtype, []) |> Enum.reverse()
    {:ok, List.to_tuple(dims), list}
  catch
    {:ragged, where} ->
      {:error,
       error(:data_size_mismatch, "nested data is ragged: rows of different lengths", %{at: where})}
  end

  @doc "The elements as a flat list in C order."
  @spec to_list(t) :: [element]
  def to_list(%__MODULE__{data: data, dtype: dtype}), do: decode(data, dtype)

  @doc """
  The elements as nested tuples: a 1-d array is a tuple of elements, a 2-d
  array a tuple of row tuples, and so on; a 0-d array is its one element.
  """
  @spec to_nested(t) :: term
  def to_nested(%__MODULE__{shape: shape} = nd) do
    list = to_list(nd)

    case Tuple.to_list(shape) do
      [] -> hd(list)
      dims -> list |> nest(dims) |> elem(0)
    end
  end

  @doc "The number of elements (the product of the shape)."
  @spec size(t | tuple) :: non_neg_integer
  def size(%__MODULE__{shape: shape}), do: size(shape)
  def size(shape) when is_tuple(shape), do: shape |> Tuple.to_list() |> Enum.reduce(1, &(&1 * &2))

  @doc "The number of bytes held in `data`."
  @spec byte_size(t) :: non_neg_integer
  def byte_size(%__MODULE__{data: data}) when is_binary(data), do: Kernel.byte_size(data)

  def byte_size(%__MODULE__{data: data}) when is_list(data),
    do: Enum.reduce(data, 0, &(Kernel.byte_size(&1) + &2))

  # ------------------------------------------------------------------
  # checks

  defp check_shape(shape) when is_tuple(shape) do
    dims = Tuple.to_list(shape)

    if Enum.all?(dims, &(is_integer(&1) and &1 >= 0)) do
      {:ok, size(shape)}
    else
      {:error,
       error(:invalid_params, "shape must be a tuple of non-negative integers", %{
         param: "shape",
         value: shape
       })}
    end
  end

  defp check_shape(shape),
    do:
      {:error,
       error(:invalid_params, "shape must be a tuple, got: #{inspect(shape)}", %{
         param: "shape",
         value: shape
       })}

  defp check_length(list, size) do
    case length(list) do
      ^size ->
        :ok

      n ->
        {:error,
         error(:data_size_mismatch, "got #{n} elements for a shape of #{size} elements", %{
           expected: size,
           got: n
         })}
    end
  end

  defp check_data(data, size, dtype) when is_binary(data) do
    case Dtype.itemsize(dtype) do
      :variable ->
        {:error,
         error(:invalid_params, "#{inspect(dtype)} data must be a list of binaries", %{
           param: "data"
         })}

      itemsize ->
        expected = size * itemsize

        case Kernel.byte_size(data) do
          ^expected ->
            :ok

          n ->
            {:error,
             error(:data_size_mismatch, "got #{n} bytes, expected #{expected}", %{
               expected: expected,
               got: n
             })}
        end
    end
  end

  defp check_data(data, size, dtype) when is_list(data) and dtype in [:string, :bytes] do
    with :ok <- check_length(data, size), {:ok, _} <- encode(data, dtype), do: :ok
  end

  defp check_data(_data, _size, dtype) do
    {:error,
     error(:invalid_params, "data must be a binary for dtype #{inspect(dtype)}", %{param: "data"})}
  end

  # ------------------------------------------------------------------
  # nested tuples

  defp leaf?(term, dtype) when dtype in [:complex64, :complex128] do
    case term do
      {re, im} -> not (is_tuple(re) or is_list(re) or is_tuple(im) or is_list(im))
      t -> not (is_tuple(t) or is_list(t))
    end
  end

  defp leaf?(term, _dtype), do: not (is_tuple(term) or is_list(term))

  defp infer_dims(term, dtype, acc) do
    cond do
      leaf?(term, dtype) -> Enum.reverse(acc)
      is_tuple(term) and tuple_size(term) == 0 -> Enum.reverse([0 | acc])
      is_tuple(term) -> infer_dims(elem(term, 0), dtype, [tuple_size(term) | acc])
      term == [] -> Enum.reverse([0 | acc])
      true -> infer_dims(hd(term), dtype, [length(term) | acc])
    end
  end

  defp flatten(term, [], dtype, acc) do
    if leaf?(term, dtype), do: [term | acc], else: throw({:ragged, inspect(term, limit: 5)})
  end

  defp flatten(term, [dim | dims], dtype, acc) do
    items =
      cond do
        leaf?(term, dtype) -> throw({:ragged, inspect(term, limit: 5)})
        is_tuple(term) and tuple_size(term) == dim -> Tuple.to_list(term)
        is_list(term) and length(term) == dim -> term
        true -> throw({:ragged, inspect(term, limit: 5)})
      end

    Enum.reduce(items, acc, &flatten(&1, dims, dtype, &2))
  end

  defp nest(list, [dim]) do
    {row, rest} = Enum.split(list, dim)
    {List.to_tuple(row), rest}
  end

  defp nest(list, [dim | dims]) do
    {rows, rest} =
      Enum.map_reduce(List.duplicate(nil, dim), list, fn _, acc -> nest(acc, dims) end)

    {List.to_tuple(rows), rest}
  end

  # ------------------------------------------------------------------
  # encoding: list of elements -> binary (or list for variable-length)

  @doc false
  @spec encode([element], dtype) :: {:ok, binary | [binary]} | {:error, Error.t()}
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
  @spec decode(binary | [binary], dtype) :: [element]
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

  # ------------------------------------------------------------------

  defp error(code, message, details), do: %Error{code: code, message: message, details: details}

  defp bang({:ok, value}), do: value
  defp bang({:error, error}), do: raise(error)
end
