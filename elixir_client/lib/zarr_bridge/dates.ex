defmodule ZarrBridge.Dates do
  @moduledoc """
  NumPy `datetime64` and `timedelta64` values as Elixir dates and durations.

  An `%NDArray{}` of dtype `{:datetime64, unit}` or `{:timedelta64, unit}`
  holds int64 counts of `unit` (since 1970-01-01T00:00:00 for datetimes),
  with NaT as `-2^63`. This module converts them:

    * datetimes to `DateTime` (in `"Etc/UTC"`: NumPy datetimes carry no
      time zone, they are read as UTC), `NaiveDateTime`, or `{count, unit}`;
    * timedeltas to `{count, unit}` (a count of the dtype's base unit, so a
      `timedelta64[15m]` value 2 is `{30, :m}`);
    * NaT to `nil`, both ways.

  Every NumPy unit is handled: `:Y` and `:M` are calendar units (a year or
  month count since 1970, read as the first instant of that year or month),
  `:W :D :h :m :s :ms :us` fixed ones, and `:ns :ps :fs :as` finer than
  Elixir holds.

  ## Precision

  `DateTime` and `NaiveDateTime` hold microseconds. Reading a `ns`, `ps`,
  `fs` or `as` value that is not a whole number of microseconds is
  **refused** (`:invalid_params`, with the index and the value) unless
  `precision: :truncate` is given, which rounds toward the past as NumPy's
  `astype("M8[us]")` does. The same holds on the way in: a `DateTime` with
  microseconds written to a `datetime64[s]` array, or one not at the start
  of a month written to `datetime64[M]`, is refused unless
  `precision: :truncate`. Exact conversions never need the option. The
  `{count, unit}` form is always exact. Outside the years Elixir's calendar
  holds (-9999..9999) a value cannot be a `DateTime` and is refused.

  The precision of the `DateTime` read matches the unit: `{0, 0}` for
  seconds and coarser, milliseconds for `:ms`, microseconds for `:us` and
  finer.

  ## Examples

      {:ok, nd} = ZarrBridge.Dates.from_list([~U[2024-01-01 06:00:00Z], nil], {2}, {:datetime64, :s})
      {:ok, [~U[2024-01-01 06:00:00Z], nil]} = ZarrBridge.Dates.to_list(nd, dates: :datetime)
  """

  alias ZarrBridge.{Dtype, Error, NDArray}

  @nat -0x8000000000000000

  # Attoseconds per unit, for the fixed units.
  @atto %{
    as: 1,
    fs: 1_000,
    ps: 1_000_000,
    ns: 1_000_000_000,
    us: 1_000_000_000_000,
    ms: 1_000_000_000_000_000,
    s: 1_000_000_000_000_000_000,
    m: 60_000_000_000_000_000_000,
    h: 3_600_000_000_000_000_000_000,
    D: 86_400_000_000_000_000_000_000,
    W: 604_800_000_000_000_000_000_000
  }
  @atto_per_us 1_000_000_000_000

  @typedoc "A count of a NumPy time unit, e.g. `{90, :m}`."
  @type duration :: {integer, Dtype.base_unit()}
  @type mode :: :datetime | :naive | :integer
  @type value :: DateTime.t() | NaiveDateTime.t() | duration | integer | nil

  @doc "The NaT sentinel as stored (`-2^63`)."
  @spec nat() :: integer
  def nat, do: @nat

  @doc """
  The elements of `nd` as a flat list, with dates converted.

  Options:

    * `dates:` - `:datetime` (default), `:naive` or `:integer` for
      `datetime64` arrays (`:integer` gives `{count, unit}`); timedelta64
      arrays always give `{count, unit}`. NaT is `nil`.
    * `precision:` - `:exact` (default: refuse what Elixir cannot hold
      exactly) or `:truncate` (round toward the past to microseconds).

  Arrays of other dtypes give `NDArray.to_list/1` unchanged.
  """
  @spec to_list(NDArray.t(), keyword) :: {:ok, [value]} | {:error, Error.t()}
  def to_list(%NDArray{dtype: dtype} = nd, opts \\ []) do
    {mode, precision} = options!(opts)

    case dtype do
      {kind, unit} when kind in [:datetime64, :timedelta64] ->
        nd |> NDArray.to_list() |> convert_all(kind, unit, mode, precision)

      _ ->
        {:ok, NDArray.to_list(nd)}
    end
  end

  @doc "Like `to_list/2`, but raises `ZarrBridge.Error`."
  @spec to_list!(NDArray.t(), keyword) :: [value]
  def to_list!(nd, opts \\ []), do: bang(to_list(nd, opts))

  @doc """
  Builds an `%NDArray{}` of `dtype` from a flat C-order list.

  For `{:datetime64, unit}` the elements may be `DateTime` (any time zone:
  its UTC instant is stored), `NaiveDateTime`, `{count, unit}`, a raw
  integer count, or `nil` (NaT). For `{:timedelta64, unit}`: `{count,
  unit}`, a raw integer, or `nil`. A `{count, unit}` in another unit is
  converted when that is exact (calendar units `:Y`/`:M` convert only to
  each other). Option `precision:` as in `to_list/2`. Other dtypes go to
  `NDArray.from_list/3` unchanged.

  Errors: `:invalid_params` (an element that does not fit, with `index`
  and `value` in `details`), and those of `NDArray.from_list/3`.
  """
  @spec from_list([value], tuple, NDArray.dtype() | String.t(), keyword) ::
          {:ok, NDArray.t()} | {:error, Error.t()}
  def from_list(list, shape, dtype, opts \\ []) when is_list(list) do
    {_mode, precision} = options!(opts)

    with {:ok, dtype} <- Dtype.normalize(dtype) do
      case dtype do
        {kind, unit} when kind in [:datetime64, :timedelta64] ->
          with {:ok, ints} <- encode_all(list, kind, unit, precision) do
            NDArray.from_list(ints, shape, dtype)
          end

        _ ->
          NDArray.from_list(list, shape, dtype)
      end
    end
  end

  @doc "Like `from_list/4`, but raises `ZarrBridge.Error`."
  @spec from_list!([value], tuple, NDArray.dtype() | String.t(), keyword) :: NDArray.t()
  def from_list!(list, shape, dtype, opts \\ []), do: bang(from_list(list, shape, dtype, opts))

  @doc """
  One stored `datetime64` count of `unit` to a `DateTime` (`nil` for NaT).
  Options: `precision:` as in `to_list/2`.
  """
  @spec to_datetime(integer, Dtype.unit(), keyword) ::
          {:ok, DateTime.t() | nil} | {:error, Error.t()}
  def to_datetime(count, unit, opts \\ []) do
    {_, precision} = options!(opts)
    one(fn -> datetime(count, unit, precision) end, count)
  end

  @doc "Like `to_datetime/3`, but gives a `NaiveDateTime`."
  @spec to_naive(integer, Dtype.unit(), keyword) ::
          {:ok, NaiveDateTime.t() | nil} | {:error, Error.t()}
  def to_naive(count, unit, opts \\ []) do
    with {:ok, dt} <- to_datetime(count, unit, opts), do: {:ok, dt && DateTime.to_naive(dt)}
  end

  @doc """
  A `DateTime`, `NaiveDateTime`, `{count, unit}`, integer or `nil` to the
  stored `datetime64` count of `unit`. Options: `precision:`.
  """
  @spec from_datetime(value, Dtype.unit(), keyword) :: {:ok, integer} | {:error, Error.t()}
  def from_datetime(value, unit, opts \\ []) do
    {_, precision} = options!(opts)
    one(fn -> encode(value, :datetime64, unit, precision) end, value)
  end

  @doc """
  Converts a `{count, unit}` duration to another unit, exactly
  (`{:error, _}` when it is not a whole number of the target unit, unless
  `precision: :truncate`, which floors).
  """
  @spec convert(duration, Dtype.base_unit(), keyword) :: {:ok, duration} | {:error, Error.t()}
  def convert({count, from}, to, opts \\ []) when is_integer(count) do
    {_, precision} = options!(opts)
    one(fn -> {rescale(count, from, to, precision, {count, from}), to} end, {count, from})
  end

  # ------------------------------------------------------------------

  defp options!(opts) do
    mode = Keyword.get(opts, :dates, :datetime)
    precision = Keyword.get(opts, :precision, :exact)

    if mode not in [:datetime, :naive, :integer],
      do:
        raise(ArgumentError, "dates: must be :datetime, :naive or :integer, got #{inspect(mode)}")

    if precision not in [:exact, :truncate],
      do:
        raise(ArgumentError, "precision: must be :exact or :truncate, got #{inspect(precision)}")

    {mode, precision}
  end

  defp split_unit({count, unit}), do: {count, unit}
  defp split_unit(unit), do: {1, unit}

  defp convert_all(ints, kind, unit, mode, precision) do
    {:ok, map_indexed(ints, &decode(&1, kind, unit, mode, precision))}
  catch
    {:bad, index, value, why} -> {:error, bad_error(index, value, why, {kind, unit})}
  end

  defp encode_all(list, kind, unit, precision) do
    {:ok, map_indexed(list, &encode(&1, kind, unit, precision))}
  catch
    {:bad, index, value, why} -> {:error, bad_error(index, value, why, {kind, unit})}
  end

  defp map_indexed(list, fun) do
    list
    |> Enum.reduce({[], 0}, fn x, {acc, i} ->
      try do
        {[fun.(x) | acc], i + 1}
      catch
        {:bad, value, why} -> throw({:bad, i, value, why})
      end
    end)
    |> elem(0)
    |> Enum.reverse()
  end

  defp one(fun, value) do
    {:ok, fun.()}
  catch
    {:bad, v, why} -> {:error, bad_error(nil, v || value, why, nil)}
  end

  defp bad_error(index, value, why, dtype) do
    where = if index, do: " at index #{index}", else: ""

    %Error{
      code: :invalid_params,
      message: "#{inspect(value, limit: 5)}#{where}: #{why}",
      details: %{param: "data", index: index, value: value, dtype: dtype}
    }
  end

  # stored count -> Elixir value
  defp decode(@nat, _kind, _unit, _mode, _precision), do: nil

  defp decode(n, :timedelta64, unit, _mode, _precision) do
    {count, base} = split_unit(unit)
    {n * count, base}
  end

  defp decode(n, :datetime64, unit, :integer, _precision) do
    {count, base} = split_unit(unit)
    {n * count, base}
  end

  defp decode(n, :datetime64, unit, :datetime, precision), do: datetime(n, unit, precision)

  defp decode(n, :datetime64, unit, :naive, precision),
    do: n |> datetime(unit, precision) |> DateTime.to_naive()

  defp datetime(@nat, _unit, _precision), do: nil

  defp datetime(n, unit, precision) do
    {count, base} = split_unit(unit)
    n = n * count

    case base do
      :Y -> calendar(1970 + n, 1, n)
      :M -> calendar(1970 + Integer.floor_div(n, 12), Integer.mod(n, 12) + 1, n)
      _ -> instant(n, base, precision)
    end
  end

  defp calendar(year, month, n) do
    with {:ok, date} <- Date.new(year, month, 1),
         {:ok, dt} <- DateTime.new(date, ~T[00:00:00]) do
      dt
    else
      _ -> throw({:bad, n, "outside the years a DateTime holds"})
    end
  end

  defp instant(n, base, precision) do
    atto = n * Map.fetch!(@atto, base)
    us = Integer.floor_div(atto, @atto_per_us)

    if precision == :exact and us * @atto_per_us != atto,
      do:
        throw(
          {:bad, n,
           "#{n} #{base} is not a whole number of microseconds (the precision of a DateTime); " <>
             "pass precision: :truncate to round toward the past"}
        )

    case DateTime.from_unix(us, :microsecond) do
      {:ok, dt} -> set_precision(dt, base)
      {:error, _} -> throw({:bad, n, "outside the years a DateTime holds"})
    end
  end

  defp set_precision(dt, base) when base in [:W, :D, :h, :m, :s],
    do: DateTime.truncate(dt, :second)

  defp set_precision(dt, :ms), do: DateTime.truncate(dt, :millisecond)
  defp set_precision(dt, _), do: dt

  # Elixir value -> stored count
  defp encode(nil, _kind, _unit, _precision), do: @nat
  defp encode(n, _kind, _unit, _precision) when is_integer(n), do: n

  defp encode({n, from} = value, _kind, unit, precision) when is_integer(n) do
    {count, base} = split_unit(unit)
    scaled = rescale(n, from, base, precision, value)
    divide(scaled, count, precision, value)
  end

  defp encode(%DateTime{} = dt, :datetime64, unit, precision) do
    # The UTC instant, whatever the zone (the offsets are in the struct).
    utc = dt |> DateTime.to_unix(:microsecond) |> DateTime.from_unix!(:microsecond)
    from_naive(DateTime.to_naive(utc), unit, precision, dt)
  end

  defp encode(%NaiveDateTime{} = ndt, :datetime64, unit, precision),
    do: from_naive(ndt, unit, precision, ndt)

  defp encode(value, kind, _unit, _precision),
    do: throw({:bad, value, "is not a #{kind} value"})

  defp from_naive(ndt, unit, precision, original) do
    {count, base} = split_unit(unit)

    n =
      case base do
        :Y -> months_since_epoch(ndt, precision, original, 12)
        :M -> months_since_epoch(ndt, precision, original, 1)
        _ -> ndt |> naive_us() |> rescale(:us, base, precision, original)
      end

    divide(n, count, precision, original)
  end

  defp naive_us(ndt) do
    {seconds, us} = NaiveDateTime.to_gregorian_seconds(ndt)
    (seconds - 62_167_219_200) * 1_000_000 + us
  end

  # Whole months (or years, per = 12) since 1970-01; exact only at the start.
  defp months_since_epoch(ndt, precision, original, per) do
    months = (ndt.year - 1970) * 12 + ndt.month - 1
    n = Integer.floor_div(months, per)

    start =
      NaiveDateTime.new!(
        1970 + Integer.floor_div(n * per, 12),
        Integer.mod(n * per, 12) + 1,
        1,
        0,
        0,
        0
      )

    if precision == :exact and NaiveDateTime.compare(start, ndt) != :eq,
      do:
        throw(
          {:bad, original,
           "is not at the start of a #{if per == 12, do: "year", else: "month"}; pass precision: :truncate to round toward the past"}
        ),
      else: n
  end

  defp divide(n, 1, _precision, _original), do: n

  defp divide(n, count, precision, original) do
    q = Integer.floor_div(n, count)

    if precision == :exact and q * count != n,
      do: throw({:bad, original, "is not a whole multiple of #{count} units"}),
      else: q
  end

  # count of `from` -> count of `to`, both base units.
  defp rescale(n, same, same, _precision, _original), do: n
  defp rescale(n, :Y, :M, _precision, _original), do: n * 12
  defp rescale(n, :M, :Y, precision, original), do: divide(n, 12, precision, original)

  defp rescale(n, from, to, precision, original) do
    with {:ok, a} <- Map.fetch(@atto, from), {:ok, b} <- Map.fetch(@atto, to) do
      divide(n * a, b, precision, original)
    else
      _ ->
        throw(
          {:bad, original,
           "cannot convert #{from} to #{to} (months and years have no fixed length)"}
        )
    end
  end

  defp bang({:ok, value}), do: value
  defp bang({:error, error}), do: raise(error)
end
