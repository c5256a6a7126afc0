defmodule ZarrBridge.Dtype do
  @moduledoc false
  # Elixir dtype names <-> wire dtype strings (protocol/PROTOCOL.md §6), and
  # item sizes. The Elixir names are documented in `ZarrBridge.NDArray`.

  alias ZarrBridge.Error

  @type base_unit :: ZarrBridge.NDArray.time_base_unit()
  @type unit :: ZarrBridge.NDArray.time_unit()
  @type t :: ZarrBridge.NDArray.dtype()

  @type wire :: String.t() | [[String.t() | wire]]

  @simple %{
    bool: {"bool", 1},
    int8: {"int8", 1},
    int16: {"int16", 2},
    int32: {"int32", 4},
    int64: {"int64", 8},
    uint8: {"uint8", 1},
    uint16: {"uint16", 2},
    uint32: {"uint32", 4},
    uint64: {"uint64", 8},
    float16: {"float16", 2},
    float32: {"float32", 4},
    float64: {"float64", 8},
    complex64: {"complex64", 8},
    complex128: {"complex128", 16}
  }

  @simple_by_wire Map.new(@simple, fn {atom, {wire, _}} -> {wire, atom} end)

  @units ~w(Y M W D h m s ms us ns ps fs as)a
  @unit_by_string Map.new(@units, &{Atom.to_string(&1), &1})

  @doc "All the atom dtypes (not the parameterised ones)."
  @spec simple() :: [atom]
  def simple, do: Map.keys(@simple) ++ [:string, :bytes]

  @doc "Time units accepted by `{:datetime64, unit}` and `{:timedelta64, unit}`."
  @spec units() :: [base_unit]
  def units, do: @units

  @doc "Is `dtype` a valid Elixir dtype?"
  @spec valid?(term) :: boolean
  def valid?(dtype), do: match?({:ok, _}, to_wire(dtype))

  @doc "Elixir dtype -> wire dtype."
  @spec to_wire(term) :: {:ok, wire} | {:error, Error.t()}
  def to_wire(dtype) when is_map_key(@simple, dtype),
    do: {:ok, elem(Map.fetch!(@simple, dtype), 0)}

  def to_wire(:string), do: {:ok, "string"}
  def to_wire(:bytes), do: {:ok, "bytes"}

  def to_wire({kind, unit}) when kind in [:datetime64, :timedelta64] and unit in @units,
    do: {:ok, "#{kind}[#{unit}]"}

  def to_wire({kind, {1, unit}}) when kind in [:datetime64, :timedelta64],
    do: to_wire({kind, unit})

  def to_wire({kind, {count, unit}})
      when kind in [:datetime64, :timedelta64] and is_integer(count) and count > 1 and
             unit in @units,
      do: {:ok, "#{kind}[#{count}#{unit}]"}

  def to_wire({:fixed_bytes, n}) when is_integer(n) and n > 0, do: {:ok, "S#{n}"}
  def to_wire({:fixed_unicode, n}) when is_integer(n) and n > 0, do: {:ok, "U#{n}"}

  def to_wire([_ | _] = fields) do
    if List.improper?(fields), do: unsupported(fields), else: fields_to_wire(fields)
  end

  def to_wire(other), do: unsupported(other)

  defp fields_to_wire(fields) do
    Enum.reduce_while(fields, {:ok, []}, fn
      {name, type}, {:ok, acc}
      when (is_binary(name) or is_atom(name)) and type not in [:string, :bytes] ->
        case to_wire(type) do
          {:ok, wire} -> {:cont, {:ok, [[to_string(name), wire] | acc]}}
          {:error, _} -> {:halt, unsupported(fields)}
        end

      _, _ ->
        {:halt, unsupported(fields)}
    end)
    |> case do
      {:ok, acc} -> distinct_names(Enum.reverse(acc), &hd/1, fields)
      error -> error
    end
  end

  @doc "Wire dtype -> Elixir dtype."
  @spec from_wire(term) :: {:ok, t} | {:error, Error.t()}
  def from_wire(wire) when is_map_key(@simple_by_wire, wire),
    do: {:ok, Map.fetch!(@simple_by_wire, wire)}

  def from_wire("string"), do: {:ok, :string}
  def from_wire("bytes"), do: {:ok, :bytes}
  def from_wire("datetime64[" <> rest = wire), do: time_unit(:datetime64, rest, wire)
  def from_wire("timedelta64[" <> rest = wire), do: time_unit(:timedelta64, rest, wire)
  def from_wire("S" <> n = wire), do: sized(:fixed_bytes, n, wire)
  def from_wire("U" <> n = wire), do: sized(:fixed_unicode, n, wire)

  def from_wire([_ | _] = fields) do
    if List.improper?(fields), do: unsupported(fields), else: fields_from_wire(fields)
  end

  def from_wire(other), do: unsupported(other)

  defp fields_from_wire(fields) do
    Enum.reduce_while(fields, {:ok, []}, fn
      [name, type], {:ok, acc} when is_binary(name) and type not in ["string", "bytes"] ->
        case from_wire(type) do
          {:ok, dtype} -> {:cont, {:ok, [{name, dtype} | acc]}}
          {:error, _} -> {:halt, unsupported(fields)}
        end

      _, _ ->
        {:halt, unsupported(fields)}
    end)
    |> case do
      {:ok, acc} -> distinct_names(Enum.reverse(acc), &elem(&1, 0), fields)
      error -> error
    end
  end

  # Field names must be non-empty and distinct (as NumPy requires).
  defp distinct_names(converted, name_of, original) do
    names = Enum.map(converted, name_of)

    if "" in names or length(Enum.uniq(names)) != length(names),
      do: unsupported(original),
      else: {:ok, converted}
  end

  defp time_unit(kind, rest, wire) do
    with [inner, ""] <- String.split(rest, "]"),
         {count, unit_string} <- count_and_unit(inner),
         {:ok, unit} <- Map.fetch(@unit_by_string, unit_string) do
      if count == 1, do: {:ok, {kind, unit}}, else: {:ok, {kind, {count, unit}}}
    else
      _ -> unsupported(wire)
    end
  end

  defp count_and_unit(<<digit, _::binary>> = inner) when digit in ?0..?9 do
    case Integer.parse(inner) do
      {count, unit} when count > 0 -> {count, unit}
      _ -> :error
    end
  end

  defp count_and_unit(inner), do: {1, inner}

  defp sized(kind, digits, wire) do
    case Integer.parse(digits) do
      {n, ""} when n > 0 -> {:ok, {kind, n}}
      _ -> unsupported(wire)
    end
  end

  @doc """
  Normalises a user-given dtype: an Elixir dtype, or a wire dtype string
  (`"float64"`, `"datetime64[ns]"`, `"U8"`), which is converted.
  """
  @spec normalize(term) :: {:ok, t} | {:error, Error.t()}
  def normalize(dtype) when is_binary(dtype), do: from_wire(dtype)

  def normalize(dtype) do
    case to_wire(dtype) do
      {:ok, wire} -> from_wire(wire)
      error -> error
    end
  end

  @doc "Bytes per element, or `:variable` for `:string` and `:bytes`."
  @spec itemsize(t) :: pos_integer | :variable
  def itemsize(dtype) when is_map_key(@simple, dtype), do: elem(Map.fetch!(@simple, dtype), 1)
  def itemsize(dtype) when dtype in [:string, :bytes], do: :variable
  def itemsize({kind, _unit}) when kind in [:datetime64, :timedelta64], do: 8
  def itemsize({:fixed_bytes, n}), do: n
  def itemsize({:fixed_unicode, n}), do: 4 * n

  def itemsize([_ | _] = fields) do
    Enum.reduce(fields, 0, fn {_name, type}, acc ->
      case itemsize(type) do
        :variable -> raise ArgumentError, "structured dtypes cannot hold variable-length fields"
        n -> acc + n
      end
    end)
  end

  @doc "Is `dtype` variable-length (`:string` or `:bytes`)?"
  @spec variable?(t) :: boolean
  def variable?(dtype), do: dtype in [:string, :bytes]

  defp unsupported(dtype) do
    {:error,
     %Error{
       code: :unsupported_dtype,
       message: "unsupported dtype: #{inspect(dtype)}",
       details: %{dtype: dtype}
     }}
  end
end
