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
  alias ZarrBridge.NDArray.Elements

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
  # elements <-> bytes: ZarrBridge.NDArray.Elements

  @doc false
  @spec encode([element], dtype) :: {:ok, binary | [binary]} | {:error, Error.t()}
  defdelegate encode(list, dtype), to: Elements

  @doc false
  @spec decode(binary | [binary], dtype) :: [element]
  defdelegate decode(data, dtype), to: Elements

  # ------------------------------------------------------------------

  defp error(code, message, details), do: %Error{code: code, message: message, details: details}

  defp bang({:ok, value}), do: value
  defp bang({:error, error}), do: raise(error)
end
